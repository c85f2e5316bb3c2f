#!/usr/bin/env python3
"""Monthly AWS bill of sumu vs API Gateway WebSocket, from the list prices and
assumptions of cost-model.toml and the AWS call counts cluster.sh measured
(measured.json). Prints a markdown section. Standard library only (Python 3.11+).

    python3 loadtest/bench/cost.py cost-model.toml measured.json

measured.json: {"nodes": 3,
                "background_calls_per_node_s": {"sqs.ReceiveMessage": 0.1, ...},
                "calls_per_connect": {"dynamodb.BatchWriteItem": 0.08, ...},
                "calls_per_request": {"sqs.ReceiveMessage": 0.1, ...},
                "calls_per_request_recovery": {...}}   # optional: the same, recovery window on
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
    if service == "dynamodb":
        if name in ("PutItem", "DeleteItem", "UpdateItem"):
            return p["dynamodb"]["write_request_units_per_million"] / 1e6, "1 WRU"
        if name == "BatchWriteItem":
            # Connection rows are priced per item below (2 WRU per connect); a batch
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


def main():
    model = tomllib.load(open(sys.argv[1], "rb"))
    measured = json.load(open(sys.argv[2]))
    p = model["prices"]
    a = model["assumptions"]
    hours = model["hours_per_month"]
    secs = hours * 3600

    def sumu_idle(sockets):
        nodes = max(a["min_nodes"], math.ceil(sockets / a["sockets_per_node"]))
        ec2 = nodes * p["ec2"]["hour"] * hours
        per_lcu = (p["nlb"]["active_tls_per_lcu"] if a["tls_at"] == "nlb"
                   else p["nlb"]["active_tcp_per_lcu"])
        new_per_s = sockets / (a["connection_hours"] * 3600)
        new_per_lcu = 50 if a["tls_at"] == "nlb" else 800
        lcus = max(sockets / per_lcu, new_per_s / new_per_lcu, 1.0)
        nlb = p["nlb"]["hour"] * hours + lcus * p["nlb"]["lcu_hour"] * hours
        background = cost_of(measured["background_calls_per_node_s"], p) * nodes * secs
        connects = sockets * hours / a["connection_hours"]
        rows = connects * 2 * p["dynamodb"]["write_request_units_per_million"] / 1e6
        connect_calls = cost_of(measured["calls_per_connect"], p) * connects
        return {"nodes": nodes, "EC2": ec2, "NLB": nlb, "NLB LCUs": lcus,
                "background AWS calls": background,
                "connection rows (2 WRU per connect)": rows,
                "other calls per connect (presence)": connect_calls}

    def apigw_idle(sockets):
        minutes = sockets * hours * 60
        conn = minutes / 1e6 * p["apigw"]["connection_minutes_per_million"]
        # API Gateway closes a socket idle for 10 minutes: clients send a keepalive
        # message every 9 minutes, and each is a billed message.
        keepalive = sockets * hours * 60 / 9 / 1e6 * p["apigw"]["messages_per_million"]
        return {"connection minutes": conn, "keepalive messages (every 9 min)": keepalive}

    def sumu_deliveries(d, key="calls_per_request"):
        per_request = dict(measured[key])
        # The backend's own SendMessage to the notifications queue.
        per_request["sqs.SendMessage"] = per_request.get("sqs.SendMessage", 0) + 1
        return cost_of(per_request, p) * d

    def apigw_deliveries(d):
        units = max(1, math.ceil(a["message_bytes"] / p["apigw"]["message_unit_bytes"]))
        return d * units / 1e6 * p["apigw"]["messages_per_million"]

    out = []
    out.append("## Monthly bill: sumu vs API Gateway WebSocket\n")
    out.append(f"From `loadtest/bench/cost-model.toml` (prices with sources, assumptions) and the "
               f"AWS calls measured above on the {measured['nodes']}-node cluster. "
               f"TLS ends at the {a['tls_at']}; {a['sockets_per_node']:,} sockets per "
               f"{p['ec2']['instance']} (assumed), at least {a['min_nodes']} nodes; sockets "
               f"reconnect every {a['connection_hours']} h (both cap connections at 2 h).\n")
    out.append("| monthly USD | sumu | API Gateway |")
    out.append("|---|---:|---:|")
    for sockets in (100_000, 1_000_000):
        s = sumu_idle(sockets)
        g = apigw_idle(sockets)
        s_total = sum(v for k, v in s.items() if k not in ("nodes", "NLB LCUs"))
        detail = ", ".join(f"{k} {v:,.0f}" for k, v in s.items()
                           if k not in ("nodes", "NLB LCUs"))
        gdetail = ", ".join(f"{k} {v:,.0f}" for k, v in g.items())
        out.append(f"| {sockets:,} always-connected idle sockets | **{s_total:,.0f}** "
                   f"({s['nodes']} nodes, {s['NLB LCUs']:.1f} NLB LCUs; {detail}) | "
                   f"**{sum(g.values()):,.0f}** ({gdetail}) |")
    d = a["deliveries_per_month"]
    out.append(f"| {d:,} deliveries (unicast, {a['message_bytes']} B), on top | "
               f"**{sumu_deliveries(d):,.0f}** (AWS calls per request as measured, plus the "
               f"backend's SendMessage) | **{apigw_deliveries(d):,.0f}** (messages) |")
    if "calls_per_request_recovery" in measured:
        out.append(f"| the same deliveries, recovery on | "
                   f"**{sumu_deliveries(d, 'calls_per_request_recovery'):,.0f}** (measured with "
                   f"`--recovery-window-secs 120`: each unicast also recorded in the history, "
                   f"about 3 writes) | API Gateway has no recovery |")
    out.append("")
    out.append("Price per operation used (calls priced individually; BatchWriteItem of "
               "connection rows priced per item as 2 WRU per connect):\n")
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
