"""Management: `gvold` (volmgr.daemon), the `gvol` CLI (volmgr.cli), volfile generation
(volmgr.volgen), the state store (volmgr.store) and the management protocol client
(volmgr.mgmt_client)."""
