"""Run one batch end to end: create, submit, poll until done, print every result.

``--provider`` picks xAI (the default), OpenAI or Anthropic. Without that provider's base URL
(``XAI_BASE_URL``, ``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``) in the environment or settings,
its bundled emulator is started on a free loopback port, so the demo needs no key and no
network. It runs the emulator's realistic profile (the provider's pacing and quirks), which
finishes in a few seconds at the demo's pace, and says so: the answers are canned, not a model's.
The output then explains the one line the provider counted as a success that failed here, and
ends with the next steps (a superuser, the server, the admin).
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test.utils import override_settings

from example_project.tickets.handlers import LABEL_FORMAT
from example_project.tickets.models import Ticket
from raif_batches import create_batch, poll, submit
from raif_batches.conf import provider_label
from raif_batches.models import ModelCompletionBatch

#: Each built-in emulator's ``manage.py`` command and default port, for the next steps.
EMULATOR_COMMANDS = {
    "xai": ("xai_emulator", 8765, "/v1"),
    "openai": ("openai_emulator", 8766, "/v1"),
    "anthropic": ("anthropic_emulator", 8767, ""),
}

SYSTEM = (
    "Classify the support ticket as one of: billing, bug, feature, account, other. "
    'Answer with JSON: {"label": "..."}.'
)
HANDLER = "example_project.tickets.handlers.write_labels"
TICKETS = [
    ("Charged twice this month", "My card shows two charges for the March invoice."),
    ("App crashes on login", "Since the last update the iOS app closes when I log in."),
    ("Dark mode please", "Would love a dark theme for the dashboard."),
    ("Cannot reset password", "The reset email never arrives."),
    ("Refund request", "I cancelled within the trial; please refund me."),
    ("Export to CSV broken", "The CSV export is empty for reports over 1,000 rows."),
    ("Add SSO", "We need SAML single sign-on for our team."),
    ("Change account owner", "Please transfer ownership to my colleague."),
    ("Invoice address wrong", "The VAT number on my invoices is outdated."),
    ("Slow search", "Searching tickets takes over ten seconds."),
    ("API rate limits", "What are the limits of the public API?"),
    ("Delete my data", "Please delete my account and all my data."),
    ("Webhook retries", "Do you retry webhooks that time out?"),
    ("Typo on pricing page", "It says 'anual' instead of 'annual'."),
    ("Two-factor lost phone", "I lost my phone and cannot log in with 2FA."),
    ("Calendar sync", "Please add Google Calendar sync."),
    ("Plan downgrade", "How do I move to the cheaper plan?"),
    ("<script>alert('x')</script> in title", "Our ticket title contains HTML, is that safe?"),
    ("Mobile layout", "The settings page overflows on small screens."),
    ("Team seats", "Can I add three more seats mid-cycle?"),
]


class Command(BaseCommand):
    help = "Create a batch of support-ticket classifications, run it, and print the results."
    # The demo brings its own emulator and key, so it must run before a key is configured.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=120.0, help="Seconds to wait.")
        parser.add_argument(
            "--interval", type=float, default=0.2, help="Seconds between two polls."
        )
        parser.add_argument(
            "--provider",
            choices=sorted(EMULATOR_COMMANDS),
            default="xai",
            help="Whose Batch API runs the demo (its emulator unless its base URL is set).",
        )

    def handle(
        self, *args: Any, timeout: float, interval: float, provider: str, **options: Any
    ) -> None:
        call_command("migrate", verbosity=0, interactive=False)
        self.provider = provider
        with ExitStack() as stack:
            emulated = self.configure_provider(stack)
            batch = self.create_demo_batch()
            self.stdout.write(
                f"Created batch {batch.pk} with {batch.completions.count()} requests."
            )
            report = submit([batch.pk])
            if not report.ok or not report.submitted:
                problem = report.fatal or "; ".join(report.errors + report.notes)
                raise CommandError(f"submission failed: {problem}")
            batch.refresh_from_db()
            self.stdout.write(f"Submitted as {batch.provider_batch_id}; polling…")
            deadline = time.monotonic() + timeout
            shown = ""
            while batch.results_fetched_at is None:
                if time.monotonic() > deadline:
                    raise CommandError(f"batch {batch.pk} still {batch.status} after {timeout}s")
                time.sleep(interval)
                report = poll([batch.pk], force=True)
                if report.fatal:
                    raise CommandError(report.fatal.one_line)
                batch.refresh_from_db()
                counts = batch.request_counts
                line = (
                    f"  {batch.status}: {counts.get('succeeded', 0)} succeeded, "
                    f"{counts.get('failed', 0)} failed, {counts.get('pending', 0)} pending"
                )
                if line != shown:  # one line per change, not per poll
                    self.stdout.write(line)
                    shown = line
            self.print_table(batch)
            self.explain_local_failures(batch)
            self.next_steps(emulated)

    def configure_provider(self, stack: ExitStack) -> bool:
        """Point the app at the emulator unless a provider URL is configured; True if emulated."""
        configured = getattr(settings, "RAIF_BATCHES", {}) or {}
        prefix = self.provider.upper()
        label = provider_label(self.provider)
        if os.environ.get(f"{prefix}_BASE_URL") or configured.get(f"{prefix}_BASE_URL"):
            self.stdout.write(
                f"Using the {label} API at {prefix}_BASE_URL: answers come from that server."
            )
            return False
        from raif_batches.emulator import run_emulator

        # The realistic profile: the provider's pacing (lines done over several reads), quirks on.
        emulator = stack.enter_context(run_emulator(api_key="demo-key", provider=self.provider))
        stack.enter_context(
            override_settings(
                RAIF_BATCHES={
                    **configured,
                    f"{prefix}_BASE_URL": emulator.base_url,
                    f"{prefix}_API_KEY": emulator.api_key,
                }
            )
        )
        self.stdout.write(
            f"Answers come from the bundled {label} emulator at {emulator.base_url}, not from "
            f"{label}:\n  no key, no network, nothing billed. It answers like {label}'s Batch "
            "API (its\n  pacing, its quirks, real prices) with canned texts, not a model's. Set\n"
            f"  {prefix}_BASE_URL and {prefix}_API_KEY to run the demo against {label} itself."
        )
        return True

    def create_demo_batch(self) -> ModelCompletionBatch:
        requests: list[dict[str, Any]] = []
        for index, (subject, body) in enumerate(TICKETS, start=1):
            ticket = Ticket.objects.create(subject=subject, body=body)
            requests.append(
                {
                    "custom_id": f"ticket-{index:02d}",
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": f"{subject}\n\n{body}"},
                    ],
                    "temperature": 0.2,
                    "max_tokens": 200,
                    "response_format": LABEL_FORMAT,
                    "source": ticket,
                }
            )
        # Requests that show the other outcomes: free text, a tool call, provider errors,
        # and an answer that is not the JSON it was asked for.
        requests += [
            {
                "custom_id": "summary-01",
                "messages": [
                    {
                        "role": "user",
                        "content": "Summarise in one sentence: tickets about billing "
                        "doubled this week.",
                    }
                ],
            },
            {
                "custom_id": "tool-01",
                "messages": [
                    {"role": "user", "content": "Look up order 1234 [[emulator:tool-call]]"}
                ],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "lookup_order",
                            "parameters": {
                                "type": "object",
                                "properties": {"order_id": {"type": "string"}},
                            },
                        },
                    }
                ],
            },
            {
                "custom_id": "fail-01",
                "messages": [
                    {"role": "user", "content": "[[emulator:error Content violates usage policy]]"}
                ],
            },
            {
                "custom_id": "fail-02",
                "messages": [
                    {"role": "user", "content": "[[emulator:error Request timed out upstream]]"}
                ],
            },
            {
                "custom_id": "badjson-01",
                "response_format": {"type": "json_object"},
                "messages": [{"role": "user", "content": "Label this [[emulator:invalid-json]]"}],
            },
        ]
        for request in requests:
            request.setdefault("max_tokens", 200)  # Anthropic requires it on every request
        return create_batch(
            provider=self.provider,
            requests=requests,
            name="Demo: classify tickets",
            handler=HANDLER,
        )

    def explain_local_failures(self, batch: ModelCompletionBatch) -> None:
        """The lines the provider answered with a success that failed here, and why."""
        done = batch.completions.filter(status="completed").count()
        failed = batch.completions.filter(status="failed")
        local = failed.filter(failure_error="invalid JSON answer").order_by("batch_custom_id")
        answered = done + local.count()
        self.stdout.write(
            f"\nThe provider answered {answered} requests with a success and "
            f"{failed.count() - local.count()} with an error; here {done} completed and "
            f"{failed.count()} failed."
        )
        for c in local:
            cost = f"${c.total_cost:.10f}" if c.total_cost is not None else "its price"
            self.stdout.write(
                f"\nWhy {c.batch_custom_id} failed although the provider counted it a success:\n"
                "  the request asked for JSON (response_format), and the answer is not valid\n"
                f"  JSON. The provider answered and billed it ({cost}), so its text, tokens and\n"
                "  cost are kept on the completion (raw_response), but nothing can use it as\n"
                "  structured output: it is stored as failed ('invalid JSON answer').\n"
                "  retry_failed(batch) sends such lines again in a new batch."
            )

    def next_steps(self, emulated: bool) -> None:
        url = "http://127.0.0.1:8000/admin/raif_batches/modelcompletionbatch/"
        self.stdout.write(
            "\nNext steps:\n"
            "  python manage.py createsuperuser     # an account for the admin\n"
            "  python manage.py runserver           # then open the admin:\n"
            f"  {url}\n"
            "  There: this batch, its completions (filter by status), costs, and actions to\n"
            "  submit, poll, cancel and retry."
        )
        if emulated:
            command, port, path = EMULATOR_COMMANDS[self.provider]
            prefix = self.provider.upper()
            self.stdout.write(
                "  To try submit_batches / poll_batches by hand without a key, run\n"
                f"  python manage.py {command} (it accepts any key) and set\n"
                f"  {prefix}_BASE_URL=http://127.0.0.1:{port}{path} {prefix}_API_KEY=emulator-key."
            )

    def print_table(self, batch: ModelCompletionBatch) -> None:
        rows = [("custom id", "status", "tokens", "cost (USD)", "answer or failure")]
        for c in batch.completions.order_by("batch_custom_id"):
            text = c.raw_response if c.status == "completed" else c.failure_reason
            if c.status == "completed" and isinstance(c.response_json, dict):
                text = f"label: {c.response_json.get('label')}"
            if c.status == "completed" and c.response_tool_calls:
                text = f"tool call: {c.response_tool_calls[0]['function']['name']}"
            rows.append(
                (
                    c.batch_custom_id,
                    c.status,
                    str(c.total_tokens or "-"),
                    f"{c.total_cost:.10f}" if c.total_cost is not None else "-",
                    " ".join((text or "").split())[:60],
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for number, row in enumerate(rows):
            line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4]))
            self.stdout.write(f"{line}  {row[4]}")
            if number == 0:
                self.stdout.write("-" * (sum(widths) + 8 + 40))
        batch.refresh_from_db()
        done = batch.completions.filter(status="completed").count()
        failed = batch.completions.filter(status="failed").count()
        # source_object_id is text (any model's key); a subquery would compare it with an
        # integer column, which PostgreSQL refuses, so the ids are read first.
        sources = batch.completions.exclude(source_object_id="").values_list(
            "source_object_id", flat=True
        )
        ticket_ids = [int(value) for value in sources if value.isdigit()]
        labelled = Ticket.objects.filter(pk__in=ticket_ids).exclude(label="").count()
        self.stdout.write(
            f"\nBatch {batch.pk} {batch.status}: {done} completed, {failed} failed; "
            f"cost ${batch.total_cost or 0:.10f} (prompt ${batch.prompt_token_cost or 0:.10f}, "
            f"output ${batch.output_token_cost or 0:.10f}).\n"
            f"The handler wrote labels to {labelled} ticket(s)."
        )
