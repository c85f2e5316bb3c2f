#!/usr/bin/env python3
"""Smoke test of the local AWS emulator for what sumu's `aws` engine uses.

Run inside infra/local/.venv (which has boto3):
    infra/local/emulator smoke [--port N]
    infra/local/.venv/bin/python infra/local/smoke.py --endpoint http://127.0.0.1:4566 [--ttl]

Checks (each prints OK/FAIL with what was measured):
  DynamoDB: connections table (hash user_id, range connection_id), GSI by_node,
  stream NEW_AND_OLD_IMAGES, TTL on delete_at; put/query/delete, conditional
  writes (leader lease), BatchWriteItem; DynamoDB Streams DescribeStream /
  GetShardIterator / GetRecords, stream latency.
  SNS/SQS: topic + queue, RawMessageDelivery subscription with String/Number
  attributes, the non-raw envelope, PublishBatch, SendMessageBatch, redrive to a
  DLQ (maxReceiveCount=2), long-poll wake-up latency, GetQueueUrl, Unsubscribe,
  DeleteQueue, errors for missing queues, 256 KiB limit.
  --ttl also waits (up to 75 s) for the TTL sweeper and checks it writes no stream record.

Exit status: 0 if every required check passed, 1 otherwise. Quirks (differences
from AWS that sumu must live with) are printed as NOTE lines and do not fail.
Works against ministack and moto_server (both on loopback).
"""
import argparse
import json
import random
import sys
import threading
import time
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

FAILS = []
NOTES = []


def ok(msg):
    print(f"OK    {msg}", flush=True)


def fail(msg):
    FAILS.append(msg)
    print(f"FAIL  {msg}", flush=True)


def note(msg):
    NOTES.append(msg)
    print(f"NOTE  {msg}", flush=True)


def check(cond, msg, detail=""):
    if cond:
        ok(msg)
    else:
        fail(f"{msg} {detail}".rstrip())
    return cond


def err_code(e):
    return e.response.get("Error", {}).get("Code", "?")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", default="http://127.0.0.1:4566")
    ap.add_argument("--ttl", action="store_true", help="also wait for the TTL sweeper (slow)")
    args = ap.parse_args()

    cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=30)
    kw = dict(
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=cfg,
    )
    ddb = boto3.client("dynamodb", **kw)
    streams = boto3.client("dynamodbstreams", **kw)
    sns = boto3.client("sns", **kw)
    sqs = boto3.client("sqs", **kw)
    run = uuid.uuid4().hex[:8]
    print(f"endpoint {args.endpoint} run {run}")

    stream_arn = dynamodb_checks(ddb, streams, run, args.ttl)
    sns_sqs_checks(sns, sqs, run)

    print()
    print(f"{len(FAILS)} failed, {len(NOTES)} notes")
    for f in FAILS:
        print(f"  FAIL {f}")
    return 1 if FAILS else 0


# --------------------------------------------------------------------------- DynamoDB


def read_all_records(streams, stream_arn, want, timeout=5.0):
    """Read every shard from TRIM_HORIZON until `want` records are seen or timeout."""
    deadline = time.time() + timeout
    records = []
    while time.time() < deadline:
        records = []
        desc = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]
        for shard in desc["Shards"]:
            it = streams.get_shard_iterator(
                StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            for _ in range(20):
                if not it:
                    break
                r = streams.get_records(ShardIterator=it, Limit=1000)
                records.extend(r["Records"])
                nxt = r.get("NextShardIterator")
                if not r["Records"]:
                    break
                it = nxt
        if len(records) >= want:
            return records, desc
        time.sleep(0.05)
    return records, desc


def dynamodb_checks(ddb, streams, run, do_ttl):
    table = f"SumuConnections-{run}"
    t0 = time.time()
    resp = ddb.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": "user_id", "AttributeType": "S"},
            {"AttributeName": "connection_id", "AttributeType": "S"},
            {"AttributeName": "node_id", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "user_id", "KeyType": "HASH"},
            {"AttributeName": "connection_id", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_node",
                "KeySchema": [
                    {"AttributeName": "node_id", "KeyType": "HASH"},
                    {"AttributeName": "connection_id", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    td = resp["TableDescription"]
    print(f"      CreateTable took {1000 * (time.time() - t0):.0f} ms, TableStatus={td.get('TableStatus')}")
    stream_arn = td.get("LatestStreamArn")
    check(bool(stream_arn), "CreateTable returns LatestStreamArn", repr(td.get("StreamSpecification")))
    print(f"      LatestStreamArn={stream_arn} LatestStreamLabel={td.get('LatestStreamLabel')}")
    if td.get("TableStatus") != "ACTIVE":
        note(f"CreateTable TableStatus={td.get('TableStatus')} (waiting for ACTIVE)")
    ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    d = ddb.describe_table(TableName=table)["Table"]
    gsis = {g["IndexName"]: g for g in d.get("GlobalSecondaryIndexes", [])}
    check("by_node" in gsis, "DescribeTable shows GSI by_node", repr(list(gsis)))
    if "by_node" in gsis:
        print(f"      GSI by_node IndexStatus={gsis['by_node'].get('IndexStatus')}")
    # waiting for tables: the waiter works; table_not_exists after delete is checked at the end

    r = ddb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "delete_at"}
    )
    check(r["TimeToLiveSpecification"]["Enabled"], "UpdateTimeToLive delete_at")
    r = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    check(
        r.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and r.get("AttributeName") == "delete_at",
        "DescribeTimeToLive",
        repr(r),
    )
    print(f"      DescribeTimeToLive={r}")

    ls = streams.list_streams(TableName=table)["Streams"]
    check(len(ls) == 1 and ls[0]["StreamArn"] == stream_arn, "ListStreams(TableName) finds the stream", repr(ls))

    now_ms = int(time.time() * 1000)
    item = {
        "user_id": {"S": "u1"},
        "connection_id": {"S": "c1"},
        "node_id": {"S": "n1"},
        "connected_at": {"N": str(now_ms)},
        "delete_at": {"N": str(int(time.time()) + 3600)},
    }
    t_put = time.time()
    ddb.put_item(TableName=table, Item=item)
    # stream latency: poll LATEST-less: read from TRIM_HORIZON until the INSERT shows up
    recs, desc = read_all_records(streams, stream_arn, 1, timeout=5)
    lat = (time.time() - t_put) * 1000
    check(len(recs) >= 1, f"stream INSERT record readable after PutItem ({lat:.1f} ms incl. 3 calls)")
    shards = desc["Shards"]
    print(
        f"      DescribeStream: StreamStatus={desc.get('StreamStatus')} StreamViewType={desc.get('StreamViewType')} "
        f"shards={len(shards)} first={json.dumps(shards[0], default=str) if shards else None}"
    )

    ddb.put_item(TableName=table, Item={**item, "user_id": {"S": "u1"}, "connection_id": {"S": "c2"}})
    q = ddb.query(
        TableName=table,
        KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": "u1"}},
    )
    check(q["Count"] == 2, "Query by user_id", repr(q["Count"]))
    q = ddb.query(
        TableName=table,
        IndexName="by_node",
        KeyConditionExpression="node_id = :n",
        ExpressionAttributeValues={":n": {"S": "n1"}},
    )
    check(q["Count"] == 2, "Query GSI by_node", repr(q["Count"]))

    # update (MODIFY record), then delete (REMOVE record)
    ddb.update_item(
        TableName=table,
        Key={"user_id": {"S": "u1"}, "connection_id": {"S": "c1"}},
        UpdateExpression="SET delete_at = :d",
        ExpressionAttributeValues={":d": {"N": str(int(time.time()) + 7200)}},
    )
    ddb.delete_item(TableName=table, Key={"user_id": {"S": "u1"}, "connection_id": {"S": "c1"}})
    # delete of a missing item: no record expected
    ddb.delete_item(TableName=table, Key={"user_id": {"S": "nobody"}, "connection_id": {"S": "x"}})
    # BatchWriteItem delete (the reaper's path)
    ddb.batch_write_item(
        RequestItems={table: [{"DeleteRequest": {"Key": {"user_id": {"S": "u1"}, "connection_id": {"S": "c2"}}}}]}
    )
    recs, desc = read_all_records(streams, stream_arn, 5, timeout=5)
    names = [r["eventName"] for r in recs]
    check(
        names == ["INSERT", "INSERT", "MODIFY", "REMOVE", "REMOVE"],
        "stream records INSERT,INSERT,MODIFY,REMOVE,REMOVE in order (no record for deleting a missing item)",
        repr(names),
    )
    if recs:
        ins = recs[0]
        rem = next((r for r in recs if r["eventName"] == "REMOVE"), None)
        print(f"      INSERT record: {json.dumps(ins, default=str)}")
        if rem:
            print(f"      REMOVE record: {json.dumps(rem, default=str)}")
            check("OldImage" in rem["dynamodb"], "REMOVE record carries OldImage")
            check(
                rem["dynamodb"].get("OldImage", {}).get("node_id") == {"S": "n1"},
                "OldImage has node_id",
            )
        check("NewImage" in ins["dynamodb"], "INSERT record carries NewImage")
        seqs = [r["dynamodb"]["SequenceNumber"] for r in recs]
        check(
            seqs == sorted(seqs, key=int) and len(set(seqs)) == len(seqs),
            "SequenceNumbers increase (as integers)",
            repr(seqs),
        )
        print(f"      SequenceNumbers: {seqs}")
        print(f"      ApproximateCreationDateTime type: {type(ins['dynamodb'].get('ApproximateCreationDateTime')).__name__}")
        # AFTER_SEQUENCE_NUMBER resume (checkpointing)
        shard_id = desc["Shards"][0]["ShardId"]
        it = streams.get_shard_iterator(
            StreamArn=stream_arn,
            ShardId=shard_id,
            ShardIteratorType="AFTER_SEQUENCE_NUMBER",
            SequenceNumber=seqs[2],
        )["ShardIterator"]
        r = streams.get_records(ShardIterator=it)
        check(
            [x["eventName"] for x in r["Records"]] == ["REMOVE", "REMOVE"],
            "AFTER_SEQUENCE_NUMBER iterator resumes after the checkpoint",
            repr([x["eventName"] for x in r["Records"]]),
        )
        it = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER", SequenceNumber=seqs[2]
        )["ShardIterator"]
        r = streams.get_records(ShardIterator=it)
        check(len(r["Records"]) == 3, "AT_SEQUENCE_NUMBER iterator", repr(len(r["Records"])))
        # LATEST + empty GetRecords keeps returning NextShardIterator
        it = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="LATEST")[
            "ShardIterator"
        ]
        r = streams.get_records(ShardIterator=it)
        check(
            r["Records"] == [] and bool(r.get("NextShardIterator")),
            "LATEST iterator: empty GetRecords still returns NextShardIterator",
        )
        it = r["NextShardIterator"]
        t0 = time.time()
        ddb.put_item(TableName=table, Item={**item, "connection_id": {"S": "c3"}})
        got = []
        while time.time() - t0 < 5 and not got:
            r = streams.get_records(ShardIterator=it)
            got = r["Records"]
            it = r.get("NextShardIterator") or it
        check(bool(got), f"record visible via LATEST iterator after {1000 * (time.time() - t0):.1f} ms")
        # same iterator reused twice
        try:
            streams.get_records(ShardIterator=it)
            streams.get_records(ShardIterator=it)
            print("      reusing a shard iterator twice: accepted")
        except ClientError as e:
            print(f"      reusing a shard iterator twice: {err_code(e)}")
        try:
            streams.get_records(ShardIterator="garbage-iterator")
            note("GetRecords with a garbage iterator did not fail")
        except ClientError as e:
            print(f"      GetRecords(garbage iterator) -> {err_code(e)}")

    # Conditional writes: the leader lease.
    cluster = f"SumuCluster-{run}"
    ddb.create_table(
        TableName=cluster,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    now = int(time.time() * 1000)
    ddb.put_item(
        TableName=cluster,
        Item={"pk": {"S": "lease#leader"}, "owner": {"S": "n1"}, "expires_at": {"N": str(now + 10000)}},
        ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
        ExpressionAttributeValues={":now": {"N": str(now)}},
    )
    try:
        ddb.put_item(
            TableName=cluster,
            Item={"pk": {"S": "lease#leader"}, "owner": {"S": "n2"}, "expires_at": {"N": str(now + 10000)}},
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
            ExpressionAttributeValues={":now": {"N": str(now)}},
        )
        fail("conditional PutItem on a held lease should fail")
    except ClientError as e:
        check(err_code(e) == "ConditionalCheckFailedException", "held lease -> ConditionalCheckFailedException", err_code(e))
    r = ddb.update_item(
        TableName=cluster,
        Key={"pk": {"S": "lease#leader"}},
        UpdateExpression="SET expires_at = :e",
        ConditionExpression="#o = :me",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":e": {"N": str(now + 20000)}, ":me": {"S": "n1"}},
        ReturnValues="ALL_NEW",
    )
    check(r["Attributes"]["expires_at"]["N"] == str(now + 20000), "conditional UpdateItem renews own lease")
    try:
        ddb.put_item(
            TableName=cluster,
            Item={"pk": {"S": "lease#leader"}, "owner": {"S": "n2"}},
            ConditionExpression="attribute_not_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as e:
        item_back = e.response.get("Item")
        print(f"      ReturnValuesOnConditionCheckFailure=ALL_OLD -> Item in error: {item_back is not None}")

    # Stream on a table without streams
    d = ddb.describe_table(TableName=cluster)["Table"]
    check("LatestStreamArn" not in d, "table without StreamSpecification has no stream")

    if do_ttl:
        ttl_check(ddb, streams, table, stream_arn)

    ddb.delete_table(TableName=cluster)
    ddb.delete_table(TableName=table)
    try:
        ddb.describe_table(TableName=table)
        note("DescribeTable right after DeleteTable still finds the table")
    except ClientError as e:
        check(err_code(e) == "ResourceNotFoundException", "DeleteTable removes table", err_code(e))
    return stream_arn


def ttl_check(ddb, streams, table, stream_arn):
    before, _ = read_all_records(streams, stream_arn, 0, timeout=0.1)
    n_before = len(before)
    ddb.put_item(
        TableName=table,
        Item={
            "user_id": {"S": "ttl"},
            "connection_id": {"S": "t1"},
            "node_id": {"S": "n9"},
            "delete_at": {"N": str(int(time.time()) - 5)},
        },
    )
    t0 = time.time()
    gone_after = None
    while time.time() - t0 < 75:
        r = ddb.get_item(TableName=table, Key={"user_id": {"S": "ttl"}, "connection_id": {"S": "t1"}})
        if "Item" not in r:
            gone_after = time.time() - t0
            break
        time.sleep(1)
    if gone_after is None:
        note("TTL: an expired item was still there after 75 s (GetItem still returns it)")
        return
    ok(f"TTL sweeper deleted the expired item after {gone_after:.0f} s")
    time.sleep(0.5)
    after, _ = read_all_records(streams, stream_arn, 0, timeout=0.1)
    new = after[n_before:]
    names = [r["eventName"] for r in new]
    print(f"      stream records after TTL delete: {names} userIdentity={[r.get('userIdentity') for r in new]}")
    if names == ["INSERT"]:
        note("TTL deletion writes NO stream REMOVE record (AWS writes one with userIdentity dynamodb.amazonaws.com)")
    elif names == ["INSERT", "REMOVE"]:
        note("TTL deletion writes a REMOVE stream record")


# --------------------------------------------------------------------------- SNS / SQS


def receive_all(sqs, url, want, timeout=5.0, **kw):
    got = []
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        r = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            **kw,
        )
        got.extend(r.get("Messages", []))
    return got


def drain(sqs, url):
    """Delete everything visible (PurgeQueue is limited to once per 60 s on AWS and moto)."""
    while True:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        ms = r.get("Messages", [])
        if not ms:
            return
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(ms)]
        )


def queue_arn(sqs, url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def sns_sqs_checks(sns, sqs, run):
    topic_arn = sns.create_topic(Name=f"sumu-messages-{run}")["TopicArn"]
    again = sns.create_topic(Name=f"sumu-messages-{run}")["TopicArn"]
    check(again == topic_arn, "CreateTopic is idempotent", f"{again} != {topic_arn}")
    print(f"      TopicArn={topic_arn}")
    raw_url = sqs.create_queue(QueueName=f"sumu-raw-{run}")["QueueUrl"]
    print(f"      QueueUrl={raw_url}")
    env_url = sqs.create_queue(QueueName=f"sumu-env-{run}")["QueueUrl"]
    got_url = sqs.get_queue_url(QueueName=f"sumu-raw-{run}")["QueueUrl"]
    check(got_url == raw_url, "GetQueueUrl returns the CreateQueue URL", f"{got_url} != {raw_url}")
    again = sqs.create_queue(QueueName=f"sumu-raw-{run}")["QueueUrl"]
    check(again == raw_url, "CreateQueue with same name/attributes is idempotent")
    try:
        sqs.create_queue(QueueName=f"sumu-raw-{run}", Attributes={"VisibilityTimeout": "7"})
        note("CreateQueue with the same name but different attributes succeeded (AWS: QueueAlreadyExists)")
    except ClientError as e:
        print(f"      CreateQueue same name, other attributes -> {err_code(e)}")
    raw_arn = queue_arn(sqs, raw_url)
    env_arn = queue_arn(sqs, env_url)
    print(f"      QueueArn={raw_arn}")

    # Raw delivery (attributes set in Subscribe)
    raw_sub = sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=raw_arn,
        Attributes={"RawMessageDelivery": "true"},
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    env_sub = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=env_arn, ReturnSubscriptionArn=True)[
        "SubscriptionArn"
    ]
    print(f"      SubscriptionArn={raw_sub}")
    attrs = sns.get_subscription_attributes(SubscriptionArn=raw_sub)["Attributes"]
    check(attrs.get("RawMessageDelivery") == "true", "GetSubscriptionAttributes shows RawMessageDelivery=true", repr(attrs))
    subs = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    check(len(subs) == 2, "ListSubscriptionsByTopic lists both", repr(len(subs)))

    ts = str(int(time.time() * 1000))
    body = json.dumps({"hello": "wörld", "n": 1})
    mattrs = {
        "user_id": {"DataType": "String", "StringValue": "u1"},
        "timestamp": {"DataType": "Number", "StringValue": ts},
        "source": {"DataType": "String", "StringValue": "apigw.route.publish"},
    }
    t0 = time.time()
    pub = sns.publish(TopicArn=topic_arn, Message=body, MessageAttributes=mattrs)
    print(f"      Publish took {1000 * (time.time() - t0):.1f} ms, MessageId={pub['MessageId']}")
    m = receive_all(sqs, raw_url, 1)
    lat = 1000 * (time.time() - t0)
    if check(len(m) == 1, f"raw delivery arrives in the queue ({lat:.0f} ms incl. receive)"):
        m = m[0]
        check(m["Body"] == body, "raw delivery: Body is the published Message byte-for-byte", repr(m["Body"]))
        ma = m.get("MessageAttributes", {})
        check(
            ma.get("user_id") == {"StringValue": "u1", "DataType": "String"}
            and ma.get("timestamp") == {"StringValue": ts, "DataType": "Number"}
            and ma.get("source", {}).get("StringValue") == "apigw.route.publish",
            "raw delivery keeps MessageAttributes (String and Number DataType)",
            repr(ma),
        )
        print(f"      raw message: MessageAttributes={json.dumps(ma)} Attributes={json.dumps(m.get('Attributes'))}")
        print(f"      MD5OfBody={m.get('MD5OfBody')} MD5OfMessageAttributes={m.get('MD5OfMessageAttributes')}")
        sqs.delete_message(QueueUrl=raw_url, ReceiptHandle=m["ReceiptHandle"])
    m = receive_all(sqs, env_url, 1)
    if check(len(m) == 1, "non-raw delivery arrives"):
        m = m[0]
        env = json.loads(m["Body"])
        print(f"      non-raw envelope: {json.dumps(env)}")
        print(f"      non-raw SQS MessageAttributes={json.dumps(m.get('MessageAttributes'))}")
        check(env.get("Type") == "Notification" and env.get("Message") == body, "non-raw envelope Type/Message")
        check(
            env.get("MessageAttributes", {}).get("timestamp") == {"Type": "Number", "Value": ts},
            "non-raw envelope MessageAttributes {Type,Value}",
            repr(env.get("MessageAttributes")),
        )
        sqs.delete_message(QueueUrl=env_url, ReceiptHandle=m["ReceiptHandle"])

    # Raw delivery switched on via SetSubscriptionAttributes
    sns.set_subscription_attributes(SubscriptionArn=env_sub, AttributeName="RawMessageDelivery", AttributeValue="true")
    sns.publish(TopicArn=topic_arn, Message="plain")
    m = receive_all(sqs, env_url, 1)
    check(len(m) == 1 and m[0]["Body"] == "plain", "SetSubscriptionAttributes RawMessageDelivery=true takes effect")
    for x in m:
        sqs.delete_message(QueueUrl=env_url, ReceiptHandle=x["ReceiptHandle"])
    receive_all(sqs, raw_url, 1, timeout=1.5)  # drain the raw copy of "plain"
    drain(sqs, raw_url)

    # PublishBatch
    try:
        entries = [
            {
                "Id": f"e{i}",
                "Message": json.dumps({"i": i}),
                "MessageAttributes": {"timestamp": {"DataType": "Number", "StringValue": str(i)}},
            }
            for i in range(10)
        ]
        r = sns.publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)
        check(len(r.get("Successful", [])) == 10 and not r.get("Failed"), "PublishBatch of 10", repr(r.get("Failed")))
        got = receive_all(sqs, raw_url, 10)
        bodies = sorted(json.loads(x["Body"])["i"] for x in got)
        check(bodies == list(range(10)), "PublishBatch: all 10 delivered (raw)", repr(bodies))
        check(
            all(x.get("MessageAttributes", {}).get("timestamp", {}).get("DataType") == "Number" for x in got),
            "PublishBatch keeps per-entry MessageAttributes",
        )
        sqs.delete_message_batch(
            QueueUrl=raw_url, Entries=[{"Id": str(i), "ReceiptHandle": x["ReceiptHandle"]} for i, x in enumerate(got)]
        )
        try:
            sns.publish_batch(
                TopicArn=topic_arn,
                PublishBatchRequestEntries=[{"Id": f"x{i}", "Message": "m"} for i in range(11)],
            )
            note("PublishBatch with 11 entries accepted (AWS: TooManyEntriesInBatchRequest)")
        except ClientError as e:
            print(f"      PublishBatch 11 entries -> {err_code(e)}")
    except ClientError as e:
        fail(f"PublishBatch unsupported: {err_code(e)} {e}")
    drain(sqs, env_url)

    # SendMessage / SendMessageBatch with attributes (the `send` route)
    r = sqs.send_message(QueueUrl=raw_url, MessageBody=body, MessageAttributes=mattrs)
    print(f"      SendMessage: MD5OfMessageAttributes={r.get('MD5OfMessageAttributes')}")
    got = receive_all(sqs, raw_url, 1)
    check(
        len(got) == 1 and got[0].get("MessageAttributes", {}).get("timestamp") == {"StringValue": ts, "DataType": "Number"},
        "SendMessage keeps Number attribute",
    )
    for x in got:
        sqs.delete_message(QueueUrl=raw_url, ReceiptHandle=x["ReceiptHandle"])
    r = sqs.send_message_batch(
        QueueUrl=raw_url,
        Entries=[{"Id": f"b{i}", "MessageBody": f"batch-{i}", "MessageAttributes": mattrs} for i in range(10)],
    )
    check(len(r.get("Successful", [])) == 10 and not r.get("Failed"), "SendMessageBatch of 10")
    got = receive_all(sqs, raw_url, 10)
    check(len(got) == 10, "SendMessageBatch: 10 received", repr(len(got)))
    first = sqs.receive_message(QueueUrl=raw_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    check(first == [], "received messages are invisible during VisibilityTimeout")
    r = sqs.delete_message_batch(
        QueueUrl=raw_url, Entries=[{"Id": str(i), "ReceiptHandle": x["ReceiptHandle"]} for i, x in enumerate(got)]
    )
    check(len(r.get("Successful", [])) == 10, "DeleteMessageBatch of 10")
    try:
        sqs.send_message_batch(
            QueueUrl=raw_url, Entries=[{"Id": f"x{i}", "MessageBody": "m"} for i in range(11)]
        )
        note("SendMessageBatch with 11 entries accepted")
    except ClientError as e:
        print(f"      SendMessageBatch 11 entries -> {err_code(e)}")

    # Size limits. SQS: AWS allows 1 MiB (1048576 bytes, body + attributes) since
    # 2025 (256 KiB before); SNS Publish: 256 KiB (262144 bytes).
    for n in (262144, 262145, 1048576, 1048577):
        try:
            sqs.send_message(QueueUrl=raw_url, MessageBody="x" * n)
            print(f"      SQS SendMessage body of {n} bytes: accepted")
        except ClientError as e:
            print(f"      SQS SendMessage body of {n} bytes -> {err_code(e)}")
    for n in (262144, 262145):
        try:
            sns.publish(TopicArn=topic_arn, Message="x" * n)
            print(f"      SNS Publish of {n} bytes: accepted")
        except ClientError as e:
            print(f"      SNS Publish of {n} bytes -> {err_code(e)}")
    try:
        sns.publish(TopicArn=topic_arn, Message="x" * 262000, MessageAttributes=mattrs | {"big": {"DataType": "String", "StringValue": "y" * 1000}})
        print("      SNS Publish of 262000 bytes + 1 KB attributes: accepted")
    except ClientError as e:
        print(f"      SNS Publish of 262000 bytes + 1 KB attributes -> {err_code(e)}")
    drain(sqs, raw_url)

    # Long-poll wake-up latency
    lat = []
    for _ in range(8):
        res = {}

        def poll():
            r = sqs.receive_message(QueueUrl=raw_url, WaitTimeSeconds=5, MaxNumberOfMessages=1)
            res["t"] = time.time()
            res["m"] = r.get("Messages", [])

        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.3 + random.random() * 0.1)  # random phase vs. the emulator's poll tick
        t_send = time.time()
        sqs.send_message(QueueUrl=raw_url, MessageBody="wake")
        th.join()
        if res.get("m"):
            lat.append(1000 * (res["t"] - t_send))
            sqs.delete_message(QueueUrl=raw_url, ReceiptHandle=res["m"][0]["ReceiptHandle"])
    check(len(lat) == 8, "long poll (WaitTimeSeconds=5) wakes on a new message", repr(lat))
    if lat:
        print(f"      long-poll wake latency ms: {', '.join(f'{x:.0f}' for x in lat)}")
    t0 = time.time()
    sqs.receive_message(QueueUrl=raw_url, WaitTimeSeconds=1)
    print(f"      empty long poll WaitTimeSeconds=1 returned after {1000 * (time.time() - t0):.0f} ms")

    # SNS -> SQS delivery latency (publish to receive via long poll)
    res = {}

    def poll2():
        r = sqs.receive_message(QueueUrl=raw_url, WaitTimeSeconds=5, MaxNumberOfMessages=1)
        res["t"] = time.time()
        res["m"] = r.get("Messages", [])

    th = threading.Thread(target=poll2)
    th.start()
    time.sleep(0.3 + random.random() * 0.1)
    t_pub = time.time()
    sns.publish(TopicArn=topic_arn, Message="lat")
    th.join()
    if res.get("m"):
        print(f"      SNS publish -> SQS long-poll wake: {1000 * (res['t'] - t_pub):.0f} ms")
    drain(sqs, raw_url)
    drain(sqs, env_url)

    # ChangeMessageVisibility (nack = make visible now)
    sqs.send_message(QueueUrl=raw_url, MessageBody="nack")
    got = receive_all(sqs, raw_url, 1, VisibilityTimeout=30)
    if got:
        sqs.change_message_visibility(QueueUrl=raw_url, ReceiptHandle=got[0]["ReceiptHandle"], VisibilityTimeout=0)
        again = receive_all(sqs, raw_url, 1, timeout=2)
        check(len(again) == 1, "ChangeMessageVisibility(0) makes it visible again")
        if again:
            print(f"      ApproximateReceiveCount after 2 receives: {again[0]['Attributes'].get('ApproximateReceiveCount')}")
            sqs.delete_message(QueueUrl=raw_url, ReceiptHandle=again[0]["ReceiptHandle"])
    try:
        sqs.delete_message(QueueUrl=raw_url, ReceiptHandle="bogus-receipt")
        print("      DeleteMessage with a bogus receipt handle: accepted")
    except ClientError as e:
        print(f"      DeleteMessage with a bogus receipt handle -> {err_code(e)}")

    redrive_checks(sqs, run)

    # Unsubscribe: later publishes do not reach that queue
    sns.unsubscribe(SubscriptionArn=raw_sub)
    subs = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    check(all(s["SubscriptionArn"] != raw_sub for s in subs), "Unsubscribe removes the subscription")
    sns.publish(TopicArn=topic_arn, Message="after-unsub")
    got = receive_all(sqs, raw_url, 1, timeout=1.5)
    check(got == [], "no delivery to an unsubscribed queue")
    got = receive_all(sqs, env_url, 1, timeout=3)
    check(len(got) == 1, "the other subscription still receives")

    # DeleteQueue while still subscribed: publish must still succeed
    sqs.delete_queue(QueueUrl=env_url)
    try:
        sqs.get_queue_url(QueueName=f"sumu-env-{run}")
        note("GetQueueUrl right after DeleteQueue still finds the queue")
    except ClientError as e:
        print(f"      GetQueueUrl of a deleted queue -> {err_code(e)} ({e.response['Error'].get('Message')})")
        check(err_code(e) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"), "GetQueueUrl of deleted queue errors")
    try:
        sqs.send_message(QueueUrl=env_url, MessageBody="x")
        note("SendMessage to a deleted queue succeeded")
    except ClientError as e:
        print(f"      SendMessage to a deleted queue -> {err_code(e)}; boto3 modeled: "
              f"{type(e).__name__}")
    try:
        sns.publish(TopicArn=topic_arn, Message="to-dead-sub")
        ok("Publish to a topic whose SQS subscriber queue was deleted still succeeds")
    except ClientError as e:
        # moto 5.2.5 fails the whole Publish; AWS and ministack succeed. sumu must
        # Unsubscribe before DeleteQueue (the reaper and graceful shutdown do).
        note(f"Publish to a topic with a subscription whose SQS queue was deleted FAILS: {err_code(e)} (AWS succeeds)")
    subs = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    print(f"      subscriptions left after its queue was deleted: {len(subs)} (AWS keeps it too)")
    try:
        sns.unsubscribe(SubscriptionArn=env_sub)
        sns.unsubscribe(SubscriptionArn=env_sub)
        print("      Unsubscribe twice: accepted")
    except ClientError as e:
        print(f"      Unsubscribe twice -> {err_code(e)}")
    try:
        sns.publish(TopicArn=topic_arn.rsplit(":", 1)[0] + ":no-such-topic", Message="x")
        note("Publish to a missing topic succeeded")
    except ClientError as e:
        print(f"      Publish to a missing topic -> {err_code(e)}")
    sqs.delete_queue(QueueUrl=raw_url)
    sns.delete_topic(TopicArn=topic_arn)
    throughput(sqs, run)


def redrive_checks(sqs, run):
    dlq_url = sqs.create_queue(QueueName=f"sumu-dlq-{run}")["QueueUrl"]
    dlq_arn = queue_arn(sqs, dlq_url)
    main_url = sqs.create_queue(
        QueueName=f"sumu-main-{run}",
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
            "VisibilityTimeout": "1",
        },
    )["QueueUrl"]
    a = sqs.get_queue_attributes(QueueUrl=main_url, AttributeNames=["All"])["Attributes"]
    print(f"      main queue attributes: RedrivePolicy={a.get('RedrivePolicy')} VisibilityTimeout={a.get('VisibilityTimeout')}")
    sqs.send_message(QueueUrl=main_url, MessageBody="poison")
    counts = []
    t0 = time.time()
    for attempt in range(4):
        r = sqs.receive_message(
            QueueUrl=main_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=2,
            VisibilityTimeout=0,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        ms = r.get("Messages", [])
        counts.append([m["Attributes"].get("ApproximateReceiveCount") for m in ms])
        if not ms:
            break
    print(f"      receives without delete (VisibilityTimeout=0): receive counts per attempt {counts}")
    got = receive_all(sqs, dlq_url, 1, timeout=3)
    if check(len(got) == 1 and got[0]["Body"] == "poison", f"redrive: message moved to DLQ after maxReceiveCount=2 ({time.time() - t0:.1f} s)"):
        print(f"      DLQ message Attributes={json.dumps(got[0].get('Attributes'))}")
    r = sqs.receive_message(QueueUrl=main_url, WaitTimeSeconds=0)
    check(not r.get("Messages"), "main queue empty after redrive")
    # With a real visibility timeout (1 s): receive, let it expire, receive, expire -> DLQ
    drain(sqs, dlq_url)
    sqs.send_message(QueueUrl=main_url, MessageBody="poison2")
    n = 0
    t0 = time.time()
    while time.time() - t0 < 8:
        r = sqs.receive_message(QueueUrl=main_url, WaitTimeSeconds=1, MaxNumberOfMessages=1)
        n += len(r.get("Messages", []))
        d = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=0)
        if d.get("Messages"):
            break
    check(bool(d.get("Messages")), f"redrive with VisibilityTimeout=1: in DLQ after {n} receives, {time.time() - t0:.1f} s")
    try:
        lst = sqs.list_dead_letter_source_queues(QueueUrl=dlq_url).get("queueUrls", [])
        print(f"      ListDeadLetterSourceQueues -> {lst}")
    except ClientError as e:
        note(f"ListDeadLetterSourceQueues unsupported: {err_code(e)}")
    sqs.delete_queue(QueueUrl=main_url)
    sqs.delete_queue(QueueUrl=dlq_url)


def throughput(sqs, run):
    url = sqs.create_queue(QueueName=f"sumu-tp-{run}")["QueueUrl"]
    n = 300
    t0 = time.time()
    for i in range(n):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    dt = time.time() - t0
    print(f"      sequential SendMessage from one client: {n / dt:.0f} calls/s ({1000 * dt / n:.2f} ms each)")
    sqs.delete_queue(QueueUrl=url)


if __name__ == "__main__":
    sys.exit(main())
