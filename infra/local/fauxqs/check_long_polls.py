#!/usr/bin/env python3
"""Checks that long polls on the local fauxqs behave as AWS's: with several pollers on one
queue, a message wakes one of them, and the others keep waiting (no empty answer before
their wait time ends). start.mjs patches fauxqs for this; without the patch, 40 messages
to 6 pollers gave 46 empty answers (one or more per message), with it 6 (each poller's last
wait ending). Run with the emulator venv (boto3) against a running fauxqs:

    infra/local/emulator start-fauxqs --port 4577
    infra/local/.venv/bin/python infra/local/fauxqs/check_long_polls.py http://127.0.0.1:4577
"""
import sys
import threading
import time

import boto3

POLLERS = 6
MESSAGES = 40


def main():
    kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1",
              aws_access_key_id="test", aws_secret_access_key="test")
    sqs = boto3.client("sqs", **kw)
    url = sqs.create_queue(QueueName=f"herd-{int(time.time() * 1000)}")["QueueUrl"]
    empty, full = [0], [0]
    lock = threading.Lock()
    stop = time.time() + MESSAGES * 0.1 + 2

    def poll():
        client = boto3.client("sqs", **kw)
        while time.time() < stop:
            got = client.receive_message(QueueUrl=url, WaitTimeSeconds=3,
                                         MaxNumberOfMessages=10).get("Messages", [])
            with lock:
                (full if got else empty)[0] += 1
            if got:
                client.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])

    threads = [threading.Thread(target=poll) for _ in range(POLLERS)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    for _ in range(MESSAGES):
        sqs.send_message(QueueUrl=url, MessageBody="x")
        time.sleep(0.1)
    for t in threads:
        t.join()
    sqs.delete_queue(QueueUrl=url)
    # Each poller's last wait may end empty; nothing else may.
    ok = empty[0] <= POLLERS * 2 and full[0] >= MESSAGES / 10
    print(f"{full[0]} answers with messages, {empty[0]} empty: {'ok' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
