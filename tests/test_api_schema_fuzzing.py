"""schemathesis against our own /openapi.json: generated requests for every operation."""

from __future__ import annotations

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import allow_header_conformance, negative_data_rejection, positive_data_acceptance

schema = schemathesis.openapi.from_wsgi("/openapi.json", get_wsgi_application())


@pytest.fixture(autouse=True)
def _no_failed_auth_limit(settings) -> None:
    # schemathesis sends each case again with a wrong token (its ignored-auth check): past
    # API_FAILED_AUTH_LIMIT the address would be blocked and every later case answered 429.
    settings.API_FAILED_AUTH_LIMIT = None


# Transactional: each generated request is a whole WSGI request, which closes its connection.
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_generated_requests_as_documented(case):
    # The input rules say more than a schema can (header names, URL hosts, opaque cursors), so a
    # schema-valid request may rightly be refused; test_input_fuzzing checks acceptance rule by rule.
    excluded: list = [positive_data_acceptance]
    if case.method == "GET":
        # Unknown query parameters are ignored, as the old service ignored them.
        excluded.append(negative_data_rejection)
    if case.path in ("/messages/cancel", "/messages/batch"):
        # Their Allow header also names GET, PATCH and DELETE: those of a message whose id is
        # "cancel" or "batch", documented under /messages/{id} (an operation has one path).
        excluded.append(allow_header_conformance)
    if case.path == "/messages/batch":
        # A message that breaks the schema is refused alone, inside a 200 (test_batch.py checks
        # that each gets POST /messages's refusal): only the batch's own shape is a 400.
        excluded.append(negative_data_rejection)
    headers = {"Authorization": f"Bearer {django_settings.API_TOKEN}"}
    response = case.call(headers=headers)
    if response.status_code == 413:
        # A body past PAYLOAD_MAX_BYTES is refused unread whatever it holds (documented): a
        # rejection, which negative_data_rejection's list of statuses does not name.
        excluded.append(negative_data_rejection)
    case.validate_response(response, headers=headers, excluded_checks=excluded, transport_kwargs={"headers": dict(headers)})
    if 400 <= response.status_code < 500:
        assert response.json()["detail"]


# Documents a schema never generates: every kind of character a JSON string can carry (lone
# surrogates, NUL, non-characters, outside the BMP) in the payload and the headers. (Nesting past
# the depth limit goes as raw JSON text in test_input_fuzzing: a deep Python value here would
# take schemathesis's own generation past the recursion limit.)
odd_strings = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from(
    ["\ud800", "a\udfffb", "\x00", "\ufffe", "\U0010ffff", "e\u0301\u202e"]
)
odd_documents = st.recursive(
    odd_strings | st.integers() | st.none(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(odd_strings, children, max_size=3),
    max_leaves=12,
).filter(lambda document: isinstance(document, (dict, list)))


@pytest.mark.django_db(transaction=True)
@given(case=schema["/messages"]["POST"].as_strategy(), payload=odd_documents, header=odd_strings)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_creates_with_odd_unicode_documents_never_give_a_500(case, payload, header):
    if isinstance(case.body, dict):
        case.body["payload"] = payload
        case.body["headers"] = {"X-Odd": header, header or "X-Empty": "v"}
    response = case.call(headers={"Authorization": f"Bearer {django_settings.API_TOKEN}"})
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        assert response.headers["content-type"][0].startswith("application/json")
        assert response.json()["detail"]
