#!/usr/bin/env python3
"""Monthly AWS bill of sumu vs API Gateway WebSocket, from the list prices and
assumptions of cost-model.toml, the AWS call counts cluster.sh measured
(measured.json) and, when given, what one idle socket costs a node as sizing.sh
measured it (sizing.json: the fleet's size comes from it). Prints a markdown
section. Standard library only (Python 3.11+).

    python3 loadtest/bench/cost.py cost-model.toml measured.json [sizing.json]

measured.json: {"nodes": 3,
                "background_calls_per_node_s": {"sqs.ReceiveMessage": 0.1, ...},
                "calls_per_connect": {"dynamodb.BatchWriteItem": 0.08, ...},
                "calls_per_request": {"sqs.ReceiveMessage": 0.1, ...},
                "calls_per_request_recovery": {...}}   # optional: the same, recovery window on
sizing.json: {"sockets": 19000, "node_rss_per_socket_bytes": 5900,
              "kernel_bytes_per_socket": 3500, "node_cpu_cores": 0.02, ...}
Every figure it prints is derived from those inputs; nothing is hard-coded here
but the mapping of an AWS operation to its price dimension.
"""
import json
import math
import sys
import tomllib


def unit_price(op, p):
    """USD per call of `op` ("service.Operation"), and the price dimension's name."""
    service, name = op.split(".", 1)
    if service == "sqs":
        return p["sqs"]["requests_per_million"] / 1e6, "SQS request"
    if service == "sns":
        if name.startswith("Publish"):
            return p["sns"]["publishes_per_million"] / 1e6, "SNS publish"
        return 0.0, "SNS control call (free)"
    if service == "dynamodbstreams":
        if name == "GetRecords":
            return p["dynamodb"]["streams_read_requests_per_100k"] / 1e5, "Streams read"
        return 0.0, "Streams control call (free)"
    if service == "cloudwatch":
        if name == "PutMetricData":
            return p["cloudwatch"]["put_metric_data_per_thousand"] / 1e3, "CloudWatch request"
        return 0.0, "not modelled"
    if service == "dynamodb":
        if name in ("PutItem", "DeleteItem", "UpdateItem"):
            return p["dynamodb"]["write_request_units_per_million"] / 1e6, "1 WRU"
        if name == "BatchWriteItem":
            # Connection rows are priced per item below (row_writes_per_connect); a batch
            # call itself has no price of its own.
            return 0.0, "per item, see connects"
        if name in ("GetItem", "Query", "Scan", "BatchGetItem"):
            # Small items (history heads, slots, claims of small messages): one
            # read unit each; a BatchGetItem is priced as one (its items are few
            # and small on the routing path; a resume reads more, per resume).
            return p["dynamodb"]["read_request_units_per_million"] / 1e6, "1 RRU"
        return 0.0, "control call (free)"
    return 0.0, "not modelled"


def cost_of(calls, p):
    return sum(n * unit_price(op, p)[0] for op, n in calls.items())


def sockets_per_node(model, sizing):
    """(idle sockets one instance holds, the arithmetic as markdown lines)."""
    z = model["sizing"]
    if not sizing:
        n = z["fallback_sockets_per_node"]
        return n, [f"- No sizing.json: **{n:,} sockets per node assumed** "
                   f"(`fallback_sockets_per_node`), not measured."]
    rss = sizing["node_rss_per_socket_bytes"]
    kernel = sizing["kernel_bytes_per_socket"]
    per_socket = rss + kernel + z["kernel_tcp_buffers_bytes"]
    usable = (z["instance_memory_gib"] - z["reserved_memory_gib"]) * 2**30 * z["memory_fill"]
    by_memory = usable / per_socket
    cores = sizing["node_cpu_cores"]
    per_socket_cpu = cores / sizing["sockets"] if sizing["sockets"] else 0
    budget = z["instance_vcpus"] * z["cpu_fill"] * z["cpu_speed_vs_here"]
    by_cpu = budget / per_socket_cpu if per_socket_cpu > 0 else float("inf")
    n = int(min(by_memory, by_cpu) // 1000 * 1000)
    m = sizing.get("machine", {})
    lines = [
        f"- Measured here (`loadtest/bench/sizing.sh`, {sizing['sockets']:,} idle sockets on one "
        f"node, its ping and the client's keepalive every {sizing.get('ping_interval_secs', 30)} s, "
        f"{m.get('cores', '?')} cores of {m.get('cpu', '?')}, load average "
        f"{m.get('load1_before', '?')} -> {m.get('load1_after', '?')}): node RSS "
        f"**{rss:,.0f} B** per socket, kernel slab **{kernel:,.0f} B** per socket, node CPU "
        f"**{cores:.4f} cores** for all of them ({per_socket_cpu * 1e6:.3f} core-us per socket-second).",
        f"- Memory: ({z['instance_memory_gib']} GiB - {z['reserved_memory_gib']} GiB reserved) x "
        f"{z['memory_fill']} fill = {usable / 2**30:.2f} GiB / {per_socket:,.0f} B per socket = "
        f"**{by_memory:,.0f} sockets**.",
        f"- CPU: {z['instance_vcpus']} vCPUs x {z['cpu_fill']} for idle upkeep x "
        f"{z['cpu_speed_vs_here']} (speed vs here) = {budget:.2f} cores / "
        f"{per_socket_cpu:.3g} cores per socket = **{by_cpu:,.0f} sockets**.",
        f"- So **{n:,} sockets per {model['prices']['ec2']['instance']}** (the smaller, rounded "
        f"down to a thousand).",
    ]
    return n, lines


def main():
    model = tomllib.load(open(sys.argv[1], "rb"))
    measured = json.load(open(sys.argv[2]))
    sizing = json.load(open(sys.argv[3])) if len(sys.argv) > 3 else None
    p = model["prices"]
    a = model["assumptions"]
    hours = model["hours_per_month"]
    secs = hours * 3600
    per_node, sizing_lines = sockets_per_node(model, sizing)
    lifetimes = a["connection_hours"]
    if not isinstance(lifetimes, list):
        lifetimes = [lifetimes]

    row_writes = a["row_writes_per_connect"]

    def sumu_idle(sockets, lifetime, capacity="on-demand"):
        nodes = max(a["min_nodes"], math.ceil(sockets / per_node))
        per_lcu = (p["nlb"]["active_tls_per_lcu"] if a["tls_at"] == "nlb"
                   else p["nlb"]["active_tcp_per_lcu"])
        new_per_s = sockets / (lifetime * 3600)
        new_per_lcu = 50 if a["tls_at"] == "nlb" else 800
        lcus = max(sockets / per_lcu, new_per_s / new_per_lcu, 1.0)
        bill = {"nodes": nodes, "EC2": nodes * p["ec2"]["hour"] * hours,
                "NLB": p["nlb"]["hour"] * hours + lcus * p["nlb"]["lcu_hour"] * hours,
                "NLB LCUs": lcus,
                "background AWS calls":
                    cost_of(measured["background_calls_per_node_s"], p) * nodes * secs,
                # The Sockets metric and the leader's PresenceStreamIteratorAge.
                "CloudWatch metrics": 2 * p["cloudwatch"]["metric_month"]}
        connects = sockets * hours / lifetime
        per_connect = dict(measured["calls_per_connect"])
        # Each node's periodic row sweep reads all its rows through the by_node index
        # (eventually consistent: half a read unit per 4 KB).
        sweeps = hours * 60 / a["row_sweep_minutes"]
        sweep_units = sockets * a["row_bytes"] / 4096 * 0.5 * sweeps
        if capacity == "provisioned":
            # The connections table (and its index) on provisioned capacity, auto scaled to
            # the target utilization: the steady write and read rates of the reconnects
            # (each connect's rows, and the presence Queries, which read that table), paid
            # per capacity-hour instead of per request.
            q = p["dynamodb_provisioned"]
            util = a["provisioned_target_utilization"]
            wcu = new_per_s * row_writes / util
            rcu = new_per_s * per_connect.pop("dynamodb.Query", 0) / util
            rcu += sweep_units / secs / util
            bill[f"connection rows ({wcu:,.0f} WCU provisioned)"] = wcu * q["wcu_hour"] * hours
            bill[f"presence Queries and row sweeps ({rcu:,.0f} RCU provisioned)"] = (
                rcu * q["rcu_hour"] * hours)
        else:
            d = p["dynamodb"]
            bill[f"connection rows ({row_writes} WRU per connect)"] = (
                connects * row_writes * d["write_request_units_per_million"] / 1e6)
            bill[f"row sweeps (every {a['row_sweep_minutes']} min)"] = (
                sweep_units * d["read_request_units_per_million"] / 1e6)
        bill["other calls per connect (presence)"] = cost_of(per_connect, p) * connects
        return bill

    def apigw_idle(sockets):
        minutes = sockets * hours * 60
        conn = minutes / 1e6 * p["apigw"]["connection_minutes_per_million"]
        # API Gateway closes a socket idle for 10 minutes: clients send a keepalive
        # message every 9 minutes, and each is a billed message.
        keepalive = sockets * hours * 60 / 9 / 1e6 * p["apigw"]["messages_per_million"]
        return {"connection minutes": conn, "keepalive messages (every 9 min)": keepalive}

    def sumu_deliveries(d, calls, backend_batch=1):
        per_request = dict(calls)
        # The backend's own SendMessage to the notifications queue (SendMessageBatch of
        # backend_batch requests: one SQS request per batch of small messages).
        per_request["sqs.SendMessage"] = per_request.get("sqs.SendMessage", 0) + 1 / backend_batch
        return cost_of(per_request, p) * d

    def apigw_deliveries(d):
        units = max(1, math.ceil(a["message_bytes"] / p["apigw"]["message_unit_bytes"]))
        return d * units / 1e6 * p["apigw"]["messages_per_million"]

    out = []
    out.append("## Monthly bill: sumu vs API Gateway WebSocket\n")
    out.append(f"From `loadtest/bench/cost-model.toml` (prices with sources, assumptions) and the "
               f"AWS calls measured above on the {measured['nodes']}-node cluster. "
               f"TLS ends at the {a['tls_at']}; at least {a['min_nodes']} nodes. API Gateway "
               f"closes every connection at 2 h; sumu's lifetime (`--max-connection-secs`) is "
               f"shown at {' and '.join(f'{h} h' for h in lifetimes)}.\n")
    out.append(f"### Sockets per node\n")
    out.extend(sizing_lines)
    out.append("")
    out.append("| monthly USD | sumu | API Gateway | API Gateway / sumu |")
    out.append("|---|---:|---:|---:|")
    for sockets in (100_000, 1_000_000):
        for lifetime in lifetimes:
            for capacity in ("on-demand", "provisioned"):
                s = sumu_idle(sockets, lifetime, capacity)
                g = apigw_idle(sockets)
                s_total = sum(v for k, v in s.items() if k not in ("nodes", "NLB LCUs"))
                g_total = sum(g.values())
                detail = ", ".join(f"{k} {v:,.0f}" for k, v in s.items()
                                   if k not in ("nodes", "NLB LCUs"))
                gdetail = ", ".join(f"{k} {v:,.0f}" for k, v in g.items())
                out.append(f"| {sockets:,} always-connected idle sockets, sumu lifetime "
                           f"{lifetime} h, connections table {capacity} | "
                           f"**{s_total:,.0f}** ({s['nodes']} nodes, {s['NLB LCUs']:.1f} NLB "
                           f"LCUs; {detail}) | **{g_total:,.0f}** ({gdetail}) | "
                           f"**{g_total / s_total:.1f}x** |")
    d = a["deliveries_per_month"]
    gd = apigw_deliveries(d)
    # 1 billion a month is ~380 requests/s on average: the high-rate run is the nearer one.
    runs = [(measured["calls_per_request"], measured.get("request_rate", "?"))]
    if "calls_per_request_high_rate" in measured:
        runs.append((measured["calls_per_request_high_rate"], measured.get("high_rate", "?")))
    for calls, rate in runs:
        for batch in (1, 10):
            sd = sumu_deliveries(d, calls, batch)
            how = ("the backend's SendMessage per request" if batch == 1
                   else f"the backend's SendMessageBatch of {batch}")
            out.append(f"| {d:,} deliveries (unicast, {a['message_bytes']} B), on top: AWS calls "
                       f"per request as measured at {rate} requests/s, plus {how} | "
                       f"**{sd:,.0f}** | **{gd:,.0f}** (messages) | **{gd / sd:.2f}x** |")
    if "calls_per_request_recovery" in measured:
        sd = sumu_deliveries(d, measured["calls_per_request_recovery"])
        out.append(f"| the same deliveries, recovery on (measured with `--recovery-window-secs 120` "
                   f"at {measured.get('request_rate', '?')} requests/s: each unicast also recorded "
                   f"in the history, about 3 writes), plus the backend's SendMessage per request | "
                   f"**{sd:,.0f}** | API Gateway has no recovery | - |")
    out.append("")
    out.append(f"Price per operation used (calls priced individually; BatchWriteItem of "
               f"connection rows priced per item as {row_writes} WRU per connect, or as "
               f"provisioned capacity where the row says so):\n")
    ops = sorted(set(measured["background_calls_per_node_s"]) | set(measured["calls_per_connect"])
                 | set(measured["calls_per_request"])
                 | set(measured.get("calls_per_request_recovery", {})))
    out.append("| operation | priced as | USD per million calls |")
    out.append("|---|---|---:|")
    for op in ops:
        price, what = unit_price(op, p)
        out.append(f"| {op} | {what} | {price * 1e6:.3f} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
