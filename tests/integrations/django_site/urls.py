from __future__ import annotations

from django.urls import path

from tests.integrations.django_site import views

urlpatterns = [
    path("pay", views.pay),
    path("apay", views.apay),
    path("required/pay", views.pay),
    path("slow", views.slow),
    path("aslow", views.aslow),
    path("status/<int:code>", views.status),
    path("boom", views.boom),
    path("missing", views.missing),
    path("stream", views.stream),
    path("astream", views.astream),
    path("token", views.token),
    path("download", views.download),
    path("login/<str:name>", views.login_view),
    path("drf/orders", views.Orders.as_view()),
]
