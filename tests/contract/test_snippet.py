"""The Assistants snippet from the README, unchanged, against our server."""

from __future__ import annotations

import io
import re
from pathlib import Path

import openai
import pandas as pd
from PIL import Image

from tests.support.upstream import Request, Text, ToolCalls, python_call

SALES = "month,revenue\n2026-01,1000\n2026-02,1100\n2026-03,1320\n2026-04,1188\n"

ANALYSIS = """
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('/mnt/data/sales.csv')
growth = df['revenue'].pct_change().dropna() * 100
print(f"mean growth: {growth.mean():.4f}")
plt.plot(df['month'], df['revenue'].pct_change() * 100, marker='o')
plt.title('Month-over-month growth (%)')
"""


def analyst(request: Request) -> Text | ToolCalls:
    """Call python first; then answer with the number the sandbox printed."""
    tool_messages = [m for m in request["messages"] if m.get("role") == "tool"]
    if not tool_messages:
        return python_call(ANALYSIS)
    found = re.search(r"mean growth: (-?\d+\.\d+)", tool_messages[-1]["content"])
    number = found.group(1) if found else "unknown"
    return Text(f"The average month-over-month growth rate is {number}%.")


def test_snippet_csv_in_number_and_chart_out(
    client: openai.OpenAI, upstream, tmp_path: Path
) -> None:
    """The snippet runs unchanged: the CSV reaches /mnt/data, the answer carries the growth the
    sandbox computed, and the chart comes back as a valid PNG file."""
    upstream.script = analyst
    sales = tmp_path / "sales.csv"
    sales.write_text(SALES)

    assistant = client.beta.assistants.create(
        name="Data Analyst",
        instructions="You analyze uploaded data files. Use Python to compute results.",
        model="gpt-5.4",
        tools=[{"type": "code_interpreter"}],
    )
    thread = client.beta.threads.create()
    with open(sales, "rb") as handle:  # the snippet's open(), closed for the warning filter
        file = client.files.create(file=handle, purpose="assistants")
    client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="What's the month-over-month growth rate in this file? Plot it.",
        attachments=[{"file_id": file.id, "tools": [{"type": "code_interpreter"}]}],
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error

    expected = pd.read_csv(io.StringIO(SALES))["revenue"].pct_change().dropna().mean() * 100
    pngs: list[bytes] = []
    texts: list[str] = []
    for m in client.beta.threads.messages.list(thread_id=thread.id):
        for c in m.content:
            if c.type == "image_file":
                pngs.append(client.files.content(c.image_file.file_id).read())
            elif c.type == "text" and m.role == "assistant":
                texts.append(c.text.value)
    assert texts == [f"The average month-over-month growth rate is {expected:.4f}%."]
    assert len(pngs) == 1
    image = Image.open(io.BytesIO(pngs[0]))
    assert image.format == "PNG" and image.size[0] > 100
    # The model was told where the file is, and used the model name it was given.
    system = upstream.requests[0]["messages"][0]["content"]
    assert "/mnt/data/sales.csv" in system
    assert upstream.requests[0]["model"] == "gpt-5.4"
    assert run.usage is not None and run.usage.total_tokens > 0
