from django.urls import re_path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from messages.api import views

# No trailing slash, as the contract says; the slashed form is accepted too, never redirected.
urlpatterns = [
    re_path(r"^messages/?$", views.MessageCollectionView.as_view(), name="messages"),
    # Before the detail pattern, which they extend: a message may still be called "cancel" or "batch".
    re_path(r"^messages/(?P<message_id>cancel)/?$", views.MessageCancelView.as_view(), name="messages-cancel"),
    re_path(r"^messages/(?P<message_id>batch)/?$", views.MessageBatchView.as_view(), name="messages-batch"),
    re_path(r"^messages/(?P<message_id>[^/]+)/retry/?$", views.MessageRetryView.as_view(), name="message-retry"),
    re_path(r"^messages/(?P<message_id>[^/]+)/?$", views.MessageDetailView.as_view(), name="message"),
    re_path(r"^health/?$", views.HealthView.as_view(), name="health"),
    # Probes, public like /health; their names are public ones in messages/address_limits.py.
    re_path(r"^livez/?$", views.LivenessView.as_view(), name="livez"),
    re_path(r"^readyz/?$", views.ReadinessView.as_view(), name="readyz"),
    # Public, like /health (SERVE_PERMISSIONS and SERVE_AUTHENTICATION in settings).
    re_path(r"^openapi\.json/?$", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
    re_path(r"^docs/?$", SpectacularSwaggerView.as_view(url_name="openapi-schema"), name="docs"),
    re_path(r"^metrics/?$", views.MetricsView.as_view(), name="metrics"),
]
