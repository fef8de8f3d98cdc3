from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("messages.api.urls")),
]

handler400 = "messages.api.errors.bad_request"
handler403 = "messages.api.errors.permission_denied"
handler404 = "messages.api.errors.not_found"
handler500 = "messages.api.errors.server_error"
