"""Per-job cost of the vision handlers in the attachment pipeline (issue 15).

A real hub with the vision plugin enabled in a room; each image is sent once and then
re-processed (``process_attachment``, forced) ``--rounds`` times. Reports each job's wall
time as the pipeline stored it (child process start, imports, the handler), median and max.

    PYTHONPATH=.:plugins:adapters python bench/vision_jobs_bench.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import running, test_settings
from tests.test_vision import astronaut, encoded, render

HANDLERS = ("ocr", "faces", "moderation")


def images() -> dict[str, bytes]:
    text = [f"Line {i}: the quarterly report lists invoice {1000 + i} as paid." for i in range(12)]
    return {
        "text 12 lines (PNG)": encoded(render(text)),
        "astronaut 512x512 (PNG)": encoded(astronaut()),
        "astronaut 2048x2048 (JPEG)": encoded(astronaut().resize((2048, 2048)), "JPEG"),
    }


async def seconds_of(hub, attachment: str, handler: str, after: float) -> float:
    """The stored job time once a result newer than ``after`` is there."""
    for _ in range(6000):
        for result in await hub.attachment_results(attachment):
            if result.handler == handler and result.created_at > after:
                assert result.status == "done", result.error
                return result.seconds
        await asyncio.sleep(0.05)
    raise TimeoutError(handler)


async def main(rounds: int) -> None:
    import lydian_plugins.vision.plugin as vision

    with tempfile.TemporaryDirectory() as tmp:
        async with running(test_settings(tmp, attachment_max_jobs=1)) as server:
            hub = server.hub
            if "vision" not in hub.plugins.names():
                hub.plugins.register(vision, "vision")
                await hub.plugins.reload()
            await server.create_room("bench")
            await hub.plugins.set_enabled("bench", "vision", True, by="owner")
            print(f"| image | {' | '.join(HANDLERS)} |")
            print("| --- |" + " --- |" * len(HANDLERS))
            for name, data in images().items():
                meta = await hub.attachment_pipeline.attachments.save("bench", "bench", name, data)
                times: dict[str, list[float]] = {h: [] for h in HANDLERS}
                for _ in range(rounds):
                    after = max(
                        [r.created_at for r in await hub.attachment_results(meta.id)] or [0.0]
                    )
                    await hub.process_attachment("bench", meta.id)
                    for handler in HANDLERS:
                        times[handler].append(await seconds_of(hub, meta.id, handler, after))
                cells = [f"{statistics.median(t):.2f} s (max {max(t):.2f})" for t in times.values()]
                print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
