"""Views that count their executions, in the idioms a Django project uses: function views
(sync and async), a streamed response, Http404, and a Django REST framework APIView."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.contrib.auth import login
from django.contrib.auth.models import User
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from idemkit import fencing_token

CALLS: Counter[str] = Counter()
_lock = threading.Lock()
SLOW = 0.6  # seconds the slow views take: long enough for a concurrent duplicate


def count(name: str) -> int:
    with _lock:
        CALLS[name] += 1
        return CALLS[name]


def _paid(request: HttpRequest, name: str, user: Any) -> HttpResponse:
    n = count(name)
    response = JsonResponse(
        {"charge": n, "user": user.pk, "echo": request.body.decode()}, status=201
    )
    response["Location"] = f"/payments/{n}"
    response.set_cookie("receipt", f"r{n}")
    return response


def pay(request: HttpRequest) -> HttpResponse:
    return _paid(request, "pay", request.user)


async def apay(request: HttpRequest) -> HttpResponse:
    return _paid(request, "apay", await request.auser())


def slow(request: HttpRequest) -> HttpResponse:
    count("slow")
    time.sleep(SLOW)
    return JsonResponse({"done": True}, status=201)


async def aslow(request: HttpRequest) -> HttpResponse:
    count("aslow")
    await asyncio.sleep(SLOW)
    return JsonResponse({"done": True}, status=201)


def status(request: HttpRequest, code: int) -> HttpResponse:
    return JsonResponse({"n": count("status")}, status=code)


def boom(request: HttpRequest) -> HttpResponse:
    count("boom")
    raise RuntimeError("view crashed")


def missing(request: HttpRequest) -> HttpResponse:
    count("missing")
    raise Http404("no such order")


def stream(request: HttpRequest) -> HttpResponse:
    count("stream")

    def chunks() -> Iterator[bytes]:
        for i in range(3):
            yield f"chunk{i};".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def astream(request: HttpRequest) -> HttpResponse:
    count("astream")

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"chunk{i};".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def token(request: HttpRequest) -> HttpResponse:
    count("token")
    return JsonResponse({"token": fencing_token(request)})


def login_view(request: HttpRequest, name: str) -> HttpResponse:
    login(request, User.objects.get(username=name))
    return HttpResponse("ok")


class Orders(APIView):
    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        n = count("drf")
        return Response({"order": n, "user": request.user.pk, "data": request.data}, status=201)


def download(request: HttpRequest) -> HttpResponse:
    count("download")
    return FileResponse(io.BytesIO(b"receipt-" + str(CALLS["download"]).encode()))
