"""features/arbiter: the brick side of an arbiter brick (the last brick of a `replica 3
arbiter 1` set).

An arbiter stores names, gfids, ownership, modes, xattrs and cluster/afr's changelog, but no
file data: its files stay zero-length. Fops that change data are answered without touching the
data (the content a create brings is dropped, write reports the bytes as written,
truncate/fallocate/discard/zerofill report the current attributes), the size bit of setattr is
dropped, and data reads fail with ENOSYS: cluster/afr never reads data from an arbiter, and a
heal never uses it as a data source. The changelog folded into those fops (features/index,
above) is still applied, which is what lets the arbiter vote on which data copy is good.

Sits directly above storage/posix (below features/locks and features/index).
"""
from __future__ import annotations

import errno
import logging
from dataclasses import replace
from typing import Any

from ..fops import SET_SIZE, AttrRep, CreateRep, FdReq, InodeReq, WriteRep
from ..types import Call, FopError
from ..xlator import Translator, register

log = logging.getLogger(__name__)


@register("features/arbiter")
class Arbiter(Translator):
    options_schema: dict = {}

    async def _fattr(self, call: Call, req: Any) -> AttrRep:
        return await self.children[0].fstat(call, FdReq(req.fd))

    async def create(self, call: Call, req: Any) -> CreateRep:
        return await self.children[0].create(call, replace(req, data=b"") if req.data else req)

    async def write(self, call: Call, req: Any) -> WriteRep:
        rep = await self.children[0].fstat(call, FdReq(req.fd))
        return WriteRep(len(req.data), rep.iatt)

    async def ftruncate(self, call: Call, req: Any) -> AttrRep:
        return await self._fattr(call, req)

    async def fallocate(self, call: Call, req: Any) -> AttrRep:
        return await self._fattr(call, req)

    async def discard(self, call: Call, req: Any) -> AttrRep:
        return await self._fattr(call, req)

    async def zerofill(self, call: Call, req: Any) -> AttrRep:
        return await self._fattr(call, req)

    async def truncate(self, call: Call, req: Any) -> AttrRep:
        return await self.children[0].stat(call, InodeReq(req.gfid))

    async def setattr(self, call: Call, req: Any) -> AttrRep:
        if req.valid & SET_SIZE:
            req = replace(req, valid=req.valid & ~SET_SIZE)
            if not req.valid:
                return await self.children[0].stat(call, InodeReq(req.gfid))
        return await self.children[0].setattr(call, req)

    async def fsetattr(self, call: Call, req: Any) -> AttrRep:
        if req.valid & SET_SIZE:
            req = replace(req, valid=req.valid & ~SET_SIZE)
            if not req.valid:
                return await self._fattr(call, req)
        return await self.children[0].fsetattr(call, req)

    async def read(self, call: Call, req: Any):
        raise FopError(errno.ENOSYS, "an arbiter brick holds no file data")

    async def rchecksum(self, call: Call, req: Any):
        raise FopError(errno.ENOSYS, "an arbiter brick holds no file data")

    async def seek(self, call: Call, req: Any):
        raise FopError(errno.ENOSYS, "an arbiter brick holds no file data")
