"""``churnwatch`` — the one command: run the stack or one service, train, regenerate schemas."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from services.common.exceptions import ChurnwatchError, ConfigError
from services.common.settings import Settings, load_settings
from services.synth.generator import PRESETS


def _timestamp(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an RFC 3339 timestamp, e.g. 2026-06-30T00:00:00Z") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} needs a UTC offset, e.g. 2026-06-30T00:00:00Z")
    return dt


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="churnwatch", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start every part in the foreground (embedded broker/Redis unless configured)")
    up.add_argument("--no-demo", action="store_true", help="do not start the demo POS feed")

    sub.add_parser("api", help="run the HTTP API (ingest and queries)")
    sub.add_parser("scorer", help="run one scorer worker")
    stack = sub.add_parser("stack", help="print the running stack's stack.json, or one of its values")
    stack.add_argument("key", nargs="?", help="e.g. api_url, kafka_bootstrap, redis_url")
    sub.add_parser("notifier", help="run the notifier")

    sinks = sub.add_parser("sinks", help="run the local mail/SMS/webhook sinks of the embedded stack")
    sinks.add_argument("--smtp-port", type=int, required=True)
    sinks.add_argument("--sms-port", type=int, required=True)
    sinks.add_argument("--webhook-port", type=int, required=True)
    sinks.add_argument("--out", type=Path, required=True)

    demo = sub.add_parser("demo", help="post a demo salon chain's events to a running API")
    demo.add_argument("--api-url", default=None, help="default: the api_url in stack.json")
    demo.add_argument("--api-key", default=None)
    demo.add_argument("--customers", type=int, default=120)
    demo.add_argument("--seed", type=int, default=7)

    train = sub.add_parser("train", help="train the churn model from historical events (NDJSON)")
    train.add_argument("--events", type=Path, required=True, help="NDJSON file, one event per line")
    train.add_argument("--until", type=_timestamp, required=True,
                       help="use only events with occurred_at <= this instant (RFC 3339)")
    train.add_argument("--horizon-days", type=int, required=True,
                       help="churned = no event within this many days after an observation date")
    train.add_argument("--out", type=Path, required=True, help="where to write the model artifact")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--timezone", metavar="ZONE", default=None,
                       help="count events written in UTC (offset 0) on this IANA zone's days, "
                       "as the scorer does for a store with this time zone (e.g. "
                       "America/New_York); other offsets are kept as written")
    train.add_argument("--stores", type=Path, metavar="FILE", default=None,
                       help="the stores: GET /v1/stores saved, or a JSON list of them as "
                       "PUT /v1/stores/{store_id} takes them (store_id, timezone, closures): "
                       "their closed days do not count as "
                       "silence nor in the horizon, and their zones count as the scorer's")

    gen = sub.add_parser("generate", help="write synthetic POS history (NDJSON) with known churn times")
    gen.add_argument("--preset", choices=PRESETS, default="salon",
                     help="business type of the latent churn process (default: salon)")
    gen.add_argument("--customers", type=int, default=1000)
    gen.add_argument("--start", type=_timestamp, default=None,
                     help="first instant (RFC 3339); default: --days before --end")
    gen.add_argument("--end", type=_timestamp, default=None,
                     help="last instant (RFC 3339); default: now")
    gen.add_argument("--days", type=int, default=730, help="length of the history when --start is not given")
    gen.add_argument("--stores", type=int, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", type=Path, required=True, help="NDJSON events file to write")
    gen.add_argument("--truth", type=Path, default=None,
                     help="where to write the true churn times (default: <out>.truth.ndjson)")

    model = sub.add_parser("model", help="switch the model every running scorer and the API serve")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    act = msub.add_parser("activate", help="serve the artifact at PATH (or --default) without a restart")
    act.add_argument("path", type=Path, nargs="?", help="artifact written by `churnwatch train --out`")
    act.add_argument("--default", action="store_true",
                     help="go back to the configured model (CHURNWATCH_MODEL, else the shipped default)")
    shd = msub.add_parser("shadow", help="score the artifact at PATH beside the served model in "
                          "every scorer (stored, never alerting); --off: stop")
    shd.add_argument("path", type=Path, nargs="?", help="artifact written by `churnwatch train --out`")
    shd.add_argument("--off", action="store_true", help="stop scoring a challenger")
    cmp_ = msub.add_parser("compare", help="compare the shadow model's stored scores with the "
                           "served model's (JSON)")
    cmp_.add_argument("--tenant", default="default")
    cmp_.add_argument("--limit", type=int, default=100_000, help="customers read at most")
    msub.add_parser("show", help="print the active (and shadow) model record")
    info = msub.add_parser("info", help="print an artifact's version and model card")
    info.add_argument("path", type=Path, nargs="?", help="artifact (default: the shipped default model)")

    schemas = sub.add_parser("schemas", help="write or check schemas/*.json from the Python models")
    schemas.add_argument("--write", action="store_true", help="rewrite the files (default: check)")
    schemas.add_argument("--dir", type=Path, default=Path("schemas"))
    return p


def _settings() -> Settings:
    return load_settings()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"churnwatch: {exc}", file=sys.stderr)
        return 2
    except ChurnwatchError as exc:
        print(f"churnwatch {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a file or directory the command needs: one line, not a traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"churnwatch {args.command}: cannot use{where}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "up":
        from services.cli.stack import run_stack

        settings = _settings()
        if not args.no_demo and not {"business_type", "rules"} & settings.model_fields_set:
            # the demo is a salon chain: score it with the salon rules unless told otherwise
            settings = settings.model_copy(update={"business_type": "salon"})
        return run_stack(settings, demo=not args.no_demo)
    if cmd == "api":
        from services.server.main import main as api_main

        return api_main(_settings())
    if cmd == "scorer":
        from services.cli.reach import require
        from services.scorer.worker import main as scorer_main

        settings = _settings()
        require(settings, kafka=True, redis=True)
        return scorer_main(settings)
    if cmd == "notifier":
        from services.cli.reach import require
        from services.notifier.worker import main as notifier_main

        settings = _settings()
        require(settings, kafka=True, redis=True)
        return notifier_main(settings)
    if cmd == "stack":
        return _stack(args)
    if cmd == "sinks":
        from services.cli.sinks import main as sinks_main

        return sinks_main(smtp_port=args.smtp_port, sms_port=args.sms_port,
                          webhook_port=args.webhook_port, out_dir=args.out,
                          retention_days=_settings().outbox_retention_days)
    if cmd == "demo":
        from services.cli.stack import read_stack_file
        from services.demo.feed import main as demo_main

        settings = _settings()
        url = args.api_url or read_stack_file(settings)["api_url"]
        return demo_main(api_url=url, api_key=args.api_key, customers=args.customers, seed=args.seed)
    if cmd == "train":
        from services.training.train import train

        report = train(events_path=args.events, until=args.until, horizon_days=args.horizon_days,
                       out=args.out, seed=args.seed, log=lambda s: print(s, file=sys.stderr),
                       progress=sys.stderr, timezone=args.timezone, stores=args.stores)
        print(report.to_text())
        return 0
    if cmd == "generate":
        return _generate(args)
    if cmd == "model":
        return _model(args)
    if cmd == "schemas":
        from services.common.schemagen import check_schemas, write_schemas

        if args.write:
            for path in write_schemas(args.dir):
                print(f"wrote {path}")
            return 0
        if not args.dir.is_dir():
            raise ConfigError(f"no {args.dir}/ directory here: run from the repository root "
                              "or pass --dir")
        stale = check_schemas(args.dir)
        for path in stale:
            print(f"out of date: {path} (run `make schemas`)", file=sys.stderr)
        return 1 if stale else 0
    raise AssertionError(cmd)


def _generate(args: argparse.Namespace) -> int:
    from datetime import UTC, timedelta

    from services.synth import generate, write_ndjson, write_truth

    end = args.end or datetime.now(UTC).replace(microsecond=0)
    start = args.start or end - timedelta(days=args.days)
    events, truth = generate(preset=args.preset, customers=args.customers, start=start, end=end,
                             seed=args.seed, stores=args.stores)
    n = write_ndjson(events, args.out)
    truth_path = args.truth or args.out.with_name(args.out.name + ".truth.ndjson")
    write_truth(truth, truth_path)
    churned = sum(1 for c in truth if c.churn_at is not None)
    print(f"wrote {n:,} {args.preset} events of {len(truth):,} customers to {args.out} "
          f"({start.isoformat()} .. {end.isoformat()}); true churn times of {churned:,} churners "
          f"in {truth_path}")
    return 0


def _stack(args: argparse.Namespace) -> int:
    import json

    from services.cli.reach import stack_info

    settings = _settings()
    info = stack_info(settings)
    if info is None:
        raise ConfigError(f"{settings.stack_file} not found: start the stack with `make run` "
                          "(or `churnwatch up`) with the same CHURNWATCH_HOME")
    if args.key is None:
        print(json.dumps(info, indent=2))
        return 0
    if args.key not in info:
        raise ConfigError(f"{settings.stack_file} has no {args.key!r}; it has "
                          + ", ".join(sorted(info)))
    value = info[args.key]
    print(value if isinstance(value, str) else json.dumps(value))
    return 0


def _model(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from services.common.exceptions import ModelError
    from services.scoring.model import DEFAULT_MODEL_PATH, activation_record, read_artifact

    if args.model_command == "info":
        model = read_artifact(args.path or DEFAULT_MODEL_PATH)
        card = dict(model.card)
        ref = card.get("reference")
        if isinstance(ref, dict):  # ~700 bin edges and shares: what they describe is enough
            card["reference"] = {k: ref.get(k) for k in ("snapshot", "rows")} | {
                "features": len(ref.get("features") or {}),
                "note": "decile bins of every feature and the score, for drift (docs/model.md)"}
        elif "reference" not in card:
            card["reference"] = None  # trained before references: no drift (docs/model.md)
        print(json.dumps({"version": model.version, "features": list(model.feature_names),
                          "card": card}, indent=2, ensure_ascii=False, default=str))
        return 0
    from services.cli.reach import require, with_stack

    settings, source = with_stack(_settings())
    record = None
    if args.model_command in ("activate", "shadow"):
        off = args.default if args.model_command == "activate" else args.off
        if off == (args.path is not None):
            raise ModelError("give either an artifact PATH or "
                             + ("--default" if args.model_command == "activate" else "--off"))
        if args.path is not None:
            path = args.path.resolve()
            model = read_artifact(path)  # refuse what no scorer could serve, and say why
            record = activation_record(path, model)
    # the running stack's Redis (stack.json under CHURNWATCH_HOME, else CHURNWATCH_REDIS_URL)
    require(settings, redis=True, redis_source=source)
    if args.model_command == "activate":
        asyncio.run(_store_activation(settings, record))
        if record is None:
            print("every scorer and the API go back to their configured model within "
                  f"{settings.model_refresh_seconds:g} s")
        else:
            print(f"activated {json.loads(record)['version']} ({args.path}); every scorer and the "
                  f"API switch within {settings.model_refresh_seconds:g} s. The path must be "
                  "readable by every scorer and API process.")
        return 0
    if args.model_command == "shadow":
        asyncio.run(_store_activation(settings, record, shadow=True))
        if record is None:
            print("no shadow model: scorers stop scoring a challenger within "
                  f"{settings.model_refresh_seconds:g} s")
        else:
            print(f"{json.loads(record)['version']} ({args.path}) is scored in shadow by every "
                  f"scorer within {settings.model_refresh_seconds:g} s: stored beside each "
                  "customer's score as they are re-scored, never alerting. Compare with "
                  "`churnwatch model compare`.")
        return 0
    if args.model_command == "compare":
        print(json.dumps(asyncio.run(_compare(settings, args.tenant, args.limit)), indent=2))
        return 0
    record_text = asyncio.run(_read_activation(settings))
    shadow_text = asyncio.run(_read_activation(settings, shadow=True))
    print(record_text or "no model activated: every process serves its configured model")
    if shadow_text:
        print(f"shadow: {shadow_text}")
    return 0


async def _compare(settings: Settings, tenant: str, limit: int) -> dict[str, object]:
    """The shadow comparison over the tenant's scored customers (read from the tier indexes,
    at most ``limit``)."""
    import json

    from services.common.redisconn import Keys, make_redis, parse_customer_token
    from services.scoring.shadow import TIERS, compare
    from services.state.store import read_states

    redis = make_redis(settings)
    keys = Keys(settings.redis_prefix)
    refs: list[tuple[str, str]] = []
    try:
        for tier in TIERS:
            async for token, _ in redis.zscan_iter(keys.tier_index(tier, tenant), count=1000):
                refs.append(parse_customer_token(str(token)))
                if len(refs) >= limit:
                    break
        refs = list(dict.fromkeys(refs))[:limit]
        rows: list[tuple[float, str, float, str]] = []
        versions: dict[str, int] = {}
        for start in range(0, len(refs), 1000):
            for state in await read_states(redis, keys, refs[start:start + 1000], ["risk"]):
                if "risk" not in state:
                    continue
                risk = json.loads(state["risk"])
                shadow = risk.get("shadow")
                if not shadow:
                    continue
                pair = f"{risk['model_version']} vs {shadow['model_version']}"
                versions[pair] = versions.get(pair, 0) + 1
                rows.append((float(risk["score"]), str(risk["tier"]), float(shadow["score"]),
                             str(shadow["tier"])))
    finally:
        await redis.aclose()
    return {"tenant": tenant, "customers_read": len(refs), "served_vs_shadow": versions,
            **compare(rows)}


async def _store_activation(settings: Settings, record: str | None, *, shadow: bool = False
                            ) -> None:
    from services.common.redisconn import Keys, make_redis

    redis = make_redis(settings)
    try:
        keys = Keys(settings.redis_prefix)
        key = keys.shadow_model if shadow else keys.active_model
        if record is None:
            await redis.delete(key)
        else:
            await redis.set(key, record)
    finally:
        await redis.aclose()


async def _read_activation(settings: Settings, *, shadow: bool = False) -> str | None:
    from services.common.redisconn import Keys, make_redis

    redis = make_redis(settings)
    try:
        keys = Keys(settings.redis_prefix)
        value = await redis.get(keys.shadow_model if shadow else keys.active_model)
        return str(value) if value else None
    finally:
        await redis.aclose()


if __name__ == "__main__":
    sys.exit(main())
