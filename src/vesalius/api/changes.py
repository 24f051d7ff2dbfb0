"""Corrections of patient and study attributes (with undo), and de-identification into a new
study or a download."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
