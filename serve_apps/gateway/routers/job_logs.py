"""``/workflows/{workflow_id}/jobs/{job_id}/…`` log routes — reserved for the execution issue.

To be added here (reference §2.2-2.4, SPEC §5.6), each one hop to ``JobsService``:

* ``GET …/logs`` — newest first, 100 per page, cursor; 412 when the workflow keeps no logs;
* ``GET …/logs/search?q=&stream=`` — ClickHouse text search with a per-response highlight token;
* ``GET …/logs/raw?format=txt|json|jsonl`` — streamed attachment, oldest first;
* ``GET …/events`` — SSE (``connected``, ``log``, ``end``, ``error`` frames).

The middleware already treats paths ending in ``/events`` and ``/logs/raw`` as streams (no gzip,
no request deadline, no span).
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/workflows/{workflow_id}/jobs/{job_id}", tags=["job logs"])
