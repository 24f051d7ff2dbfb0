"""Send to a peer (C-STORE or STOW-RS), query a remote AE (C-FIND), retrieve from it (C-MOVE
or C-GET): each as a job."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
