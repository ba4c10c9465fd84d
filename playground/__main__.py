"""`python -m playground`: the Discord stand-in, its web page and the real bot, all on this machine.

The bot runs unmodified as a child process (`python bot.py`), told where the stand-in is by
TALEWEAVER_DISCORD_API_BASE; it needs no Discord account and its token is a placeholder. A bot
that exits by itself (a crash, a SIGTERM sent to it alone) is started again while the stand-in
keeps its messages. Ctrl-C (or SIGTERM to the playground) stops the bot (SIGTERM, then SIGKILL
after a grace period) and then the stand-in, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from playground.standin import StandIn, StandInConfig

ROOT = Path(__file__).resolve().parent.parent
API_BASE_ENV = "TALEWEAVER_DISCORD_API_BASE"
PLACEHOLDER_TOKEN = "playground-token"
BOT_STOP_GRACE_S = 10.0
QUICK_EXIT_S = 30.0
QUICK_EXITS = 3
"""A bot that exits this many times in a row, each within `QUICK_EXIT_S` of starting, cannot start."""
RESTART_PAUSE_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m playground", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port on 127.0.0.1 (0: any free port; default 8765, or a free one when it is taken)",
    )
    parser.add_argument("--bot-config", metavar="PATH", help="config file for the bot (default: the bot's own default)")
    parser.add_argument(
        "--no-bot", action="store_true", help="start only the stand-in and the page; run a bot yourself"
    )
    return parser.parse_args(argv)


async def start_bot(api_base: str, config: str | None) -> asyncio.subprocess.Process:
    """`python bot.py [--config PATH]` in its own session, so Ctrl-C reaches us first and we stop it in order."""
    command = [sys.executable, str(ROOT / "bot.py")] + (["--config", config] if config else [])
    env = os.environ | {"DISCORD_TOKEN": PLACEHOLDER_TOKEN, API_BASE_ENV: api_base}
    return await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env, start_new_session=True)


async def stop_bot(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), BOT_STOP_GRACE_S)
    except TimeoutError:
        process.kill()
        await process.wait()


async def supervise_bot(api_base: str, config: str | None, stop: asyncio.Event) -> int:
    """Run the bot until `stop`. When it exits by itself (a crash, or a SIGTERM sent to the bot alone)
    it is started again, so the stand-in and its messages stay; one that cannot start (it exits
    soon after starting, `QUICK_EXITS` times in a row) is left down. Returns the playground's status."""
    quick_exits = 0
    while True:
        started = time.monotonic()
        bot = await start_bot(api_base, config)
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(bot.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            if stop.is_set() or bot.returncode is None:
                await stop_bot(bot)
        if stop.is_set():
            return 0
        quick_exits = quick_exits + 1 if time.monotonic() - started < QUICK_EXIT_S else 0
        if quick_exits >= QUICK_EXITS:
            print(
                f"the bot exited with code {bot.returncode} {QUICK_EXITS} times, each within {QUICK_EXIT_S:.0f} s "
                "of starting: stopping the playground (the bot's log above says why)",
                file=sys.stderr,
            )
            return bot.returncode or 1
        print(
            f"the bot exited with code {bot.returncode}; starting it again (the playground keeps its messages)",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.sleep(RESTART_PAUSE_S)


async def run(args: argparse.Namespace) -> int:
    standin = StandIn(StandInConfig(port=args.port))
    try:
        await standin.start()
    except OSError as error:
        if args.port == 0:
            print(f"cannot listen on 127.0.0.1 ({error.strerror})", file=sys.stderr)
            return 1
        # Another playground (a second `make run`) has the port: take any free one and say which.
        print(f"127.0.0.1:{args.port} is taken ({error.strerror}); using a free port instead", file=sys.stderr)
        standin = StandIn(StandInConfig(port=0))
        await standin.start()
    print(f"Taleweaver playground: {standin.url}", flush=True)
    if args.no_bot:
        print(f"Run your bot with {API_BASE_ENV}={standin.api_base} and any DISCORD_TOKEN.", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        if args.no_bot:
            await stop.wait()
            return 0
        return await supervise_bot(standin.api_base, args.bot_config, stop)
    finally:
        await standin.stop()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s playground %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
