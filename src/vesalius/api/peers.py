"""Peers (remote AEs): create, read, update, delete, and a C-ECHO test."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
