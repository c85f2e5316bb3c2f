"""Static tests of infra/terraform (no terraform binary, no AWS).

Every .tf file is parsed with python-hcl2; the tests then check that the
resources DESIGN.md needs are declared with the right keys, and evaluate each
variable's validation condition (a small HCL-expression subset translated to
Python) against values it must accept and values it must reject.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import subprocess
from pathlib import Path

import hcl2
import pytest

ROOT = Path(__file__).resolve().parent.parent
TF_FILES = sorted(ROOT.glob("*.tf"))


# ---------------------------------------------------------------------------
# Loading and normalising python-hcl2 (v8) output
# ---------------------------------------------------------------------------


def _decode_literal(text: str) -> str:
    """Turn an HCL quoted string literal body into its value."""
    try:
        return json.loads('"' + text + '"')
    except json.JSONDecodeError:
        return text


def _norm(value):
    if isinstance(value, dict):
        return {_norm_key(k): _norm(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return _decode_literal(value[1:-1])
    return value


def _norm_key(key: str) -> str:
    if len(key) >= 2 and key[0] == '"' and key[-1] == '"':
        return key[1:-1]
    return key


def _load_all():
    model = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}, "terraform": []}
    for path in TF_FILES:
        with path.open() as fh:
            doc = hcl2.load(fh)
        for kind in ("resource", "data"):
            for entry in doc.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        key = (_norm_key(rtype), _norm_key(name))
                        assert key not in model[kind], f"duplicate {kind} {key}"
                        model[kind][key] = _norm(body)
        for kind in ("variable", "output"):
            for entry in doc.get(kind, []):
                for name, body in entry.items():
                    model[kind][_norm_key(name)] = _norm(body)
        for entry in doc.get("locals", []):
            for name, value in entry.items():
                if not name.startswith("__"):
                    model["locals"][name] = _norm(value)
        model["terraform"].extend(_norm(doc.get("terraform", [])))
    return model


@pytest.fixture(scope="session")
def tf():
    return _load_all()


def res(tf, rtype, name):
    key = (rtype, name)
    assert key in tf["resource"], f"resource {rtype}.{name} is not declared"
    return tf["resource"][key]


def data(tf, dtype, name):
    key = (dtype, name)
    assert key in tf["data"], f"data {dtype}.{name} is not declared"
    return tf["data"][key]


def block(body, name):
    """The single nested block `name` of a resource body."""
    blocks = body.get(name)
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one {name} block, got {blocks!r}"
    return blocks[0]


def expr(value) -> str:
    """Strip ${...} from a pure expression."""
    assert isinstance(value, str), value
    m = re.fullmatch(r"\$\{(.*)\}", value, re.S)
    return m.group(1) if m else value


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", TF_FILES, ids=[p.name for p in TF_FILES])
def test_every_tf_file_parses(path):
    with path.open() as fh:
        doc = hcl2.load(fh)
    assert doc, f"{path.name} is empty"


def test_expected_files_exist():
    names = {p.name for p in TF_FILES}
    for required in ("versions.tf", "variables.tf", "outputs.tf", "dynamodb.tf", "messaging.tf", "iam.tf", "fleet.tf", "nlb.tf", "dns.tf", "alarms.tf", "kms.tf"):
        assert required in names
    assert (ROOT / "templates" / "user-data.sh.tftpl").is_file()
    assert (ROOT / "README.md").is_file()


def test_provider_pinned_to_aws_v5(tf):
    providers = {}
    for t in tf["terraform"]:
        for rp in t.get("required_providers", []):
            providers.update(rp)
    assert providers["aws"]["source"] == "hashicorp/aws"
    assert "< 6.0.0" in providers["aws"]["version"] and ">= 5." in providers["aws"]["version"]


def test_module_configures_no_provider():
    # A reusable module must leave provider configuration to the root module.
    for path in TF_FILES:
        with path.open() as fh:
            assert "provider" not in hcl2.load(fh), f"{path.name} configures a provider"


# ---------------------------------------------------------------------------
# Naming
# ---------------------------------------------------------------------------


def test_default_resource_names(tf):
    loc = tf["locals"]
    assert tf["variable"]["name_prefix"]["default"] == "Sumu"
    expected = {
        "connections_table_name": "${local.prefix}Connections",
        "cluster_table_name": "${local.prefix}Cluster",
        "messages_topic_name": "${local.prefix}Messages",
        "notifications_topic_name": "${local.prefix}Notifications",
        "mesh_topic_name": "${local.prefix}Mesh",
        "messages_queue_name": "${local.prefix}Messages",
        "notifications_queue_name": "${local.prefix}Notifications",
        "messages_dlq_name": "${local.prefix}MessagesDLQ",
        "history_table_name": "${local.prefix}History",
        "notifications_dlq_name": "${local.prefix}NotificationsDLQ",
    }
    for name, value in expected.items():
        assert loc[name] == value, name
    assert expr(loc["prefix"]) == "var.name_prefix"
    assert res(tf, "aws_dynamodb_table", "connections")["name"] == "${local.connections_table_name}"
    assert res(tf, "aws_dynamodb_table", "cluster")["name"] == "${local.cluster_table_name}"
    assert res(tf, "aws_dynamodb_table", "history")["name"] == "${local.history_table_name}"
    assert res(tf, "aws_sns_topic", "messages")["name"] == "${local.messages_topic_name}"
    assert res(tf, "aws_sns_topic", "notifications")["name"] == "${local.notifications_topic_name}"
    assert res(tf, "aws_sns_topic", "mesh")["name"] == "${local.mesh_topic_name}"
    assert res(tf, "aws_sqs_queue", "messages")["name"] == "${local.messages_queue_name}"
    assert res(tf, "aws_sqs_queue", "notifications")["name"] == "${local.notifications_queue_name}"
    assert res(tf, "aws_sqs_queue", "messages_dlq")["name"] == "${local.messages_dlq_name}"
    assert res(tf, "aws_sqs_queue", "notifications_dlq")["name"] == "${local.notifications_dlq_name}"


def test_create_before_destroy_only_with_generated_names(tf):
    # A replacement created before the old one is destroyed cannot reuse a
    # fixed name: such resources must use name_prefix.
    found = 0
    for (rtype, name), body in tf["resource"].items():
        for lc in body.get("lifecycle", []):
            if lc.get("create_before_destroy"):
                found += 1
                assert "name" not in body and "name_prefix" in body, f"{rtype}.{name}"
    assert found >= 2


def test_inbox_queues_are_not_created_by_terraform(tf):
    for (rtype, name), body in tf["resource"].items():
        if rtype == "aws_sqs_queue":
            assert "Inbox" not in str(body.get("name", "")), f"{name}: inbox queues are created by the nodes"


# ---------------------------------------------------------------------------
# DynamoDB
# ---------------------------------------------------------------------------


def _attributes(body):
    return {a["name"]: a["type"] for a in body["attribute"]}


def test_connections_table_keys_and_gsi(tf):
    t = res(tf, "aws_dynamodb_table", "connections")
    assert t["hash_key"] == "user_id"
    assert t["range_key"] == "connection_id"
    # On-demand unless connections_capacity = "provisioned".
    assert t["billing_mode"] == '${local.connections_provisioned ? "PROVISIONED" : "PAY_PER_REQUEST"}'
    # Only key attributes may be declared, and each must be a string.
    assert _attributes(t) == {"user_id": "S", "connection_id": "S", "node_id": "S"}
    gsi = block(t, "global_secondary_index")
    assert gsi["name"] == "by_node"
    assert gsi["hash_key"] == "node_id"
    assert gsi["range_key"] == "connection_id"
    assert gsi["projection_type"] in ("ALL", "KEYS_ONLY")


def test_connections_capacity_provisioned_is_auto_scaled(tf):
    """connections_capacity = "provisioned": the table and its by_node index get the
    minimum capacity, and target tracking on each of their read and write capacities;
    an apply leaves what auto scaling set alone."""
    t = res(tf, "aws_dynamodb_table", "connections")
    minimum = '${local.connections_provisioned ? var.connections_min_capacity : null}'
    assert t["read_capacity"] == minimum and t["write_capacity"] == minimum
    gsi = block(t, "global_secondary_index")
    assert gsi["read_capacity"] == minimum and gsi["write_capacity"] == minimum
    ignored = block(t, "lifecycle")["ignore_changes"]
    assert set(ignored) >= {"read_capacity", "write_capacity", "global_secondary_index"}, ignored
    loc = tf["locals"]
    assert loc["connections_provisioned"] == '${var.connections_capacity == "provisioned"}'
    scaling = loc["connections_scaling"]
    dims = re.findall(r'dimension\s*[:=]\s*"?(dynamodb:(?:table|index):(?:Read|Write)CapacityUnits)', str(scaling))
    assert sorted(dims) == sorted(["dynamodb:table:ReadCapacityUnits", "dynamodb:table:WriteCapacityUnits",
                                   "dynamodb:index:ReadCapacityUnits", "dynamodb:index:WriteCapacityUnits"]), scaling
    assert "index/by_node" in str(scaling)
    target = res(tf, "aws_appautoscaling_target", "connections")
    assert target["for_each"] == "${local.connections_scaling}"
    assert target["service_namespace"] == "dynamodb"
    assert target["min_capacity"] == "${var.connections_min_capacity}"
    policy = res(tf, "aws_appautoscaling_policy", "connections")
    assert policy["for_each"] == "${local.connections_scaling}"
    assert policy["policy_type"] == "TargetTrackingScaling"
    cfg = block(policy, "target_tracking_scaling_policy_configuration")
    assert cfg["target_value"] == "${var.connections_target_utilization}"
    assert tf["variable"]["connections_capacity"]["default"] == "on-demand"


def test_connections_table_stream_ttl_pitr_encryption(tf):
    t = res(tf, "aws_dynamodb_table", "connections")
    assert t["stream_enabled"] is True
    assert t["stream_view_type"] == "NEW_AND_OLD_IMAGES"
    ttl = block(t, "ttl")
    assert ttl == {"attribute_name": "delete_at", "enabled": True}
    assert block(t, "point_in_time_recovery")["enabled"] is True
    sse = block(t, "server_side_encryption")
    assert sse["enabled"] is True
    assert sse["kms_key_arn"] == "${aws_kms_key.sumu.arn}"
    assert t["deletion_protection_enabled"] == "${var.deletion_protection}"


def test_cluster_table(tf):
    t = res(tf, "aws_dynamodb_table", "cluster")
    assert t["hash_key"] == "pk"
    assert "range_key" not in t
    assert _attributes(t) == {"pk": "S"}
    assert t["billing_mode"] == "PAY_PER_REQUEST"
    ttl = block(t, "ttl")
    assert ttl["enabled"] is True and ttl["attribute_name"] == "delete_at"
    assert block(t, "point_in_time_recovery")["enabled"] is True
    assert block(t, "server_side_encryption")["kms_key_arn"] == "${aws_kms_key.sumu.arn}"


def test_history_table(tf):
    t = res(tf, "aws_dynamodb_table", "history")
    assert t["hash_key"] == "pk"
    assert t["range_key"] == "sk"
    assert _attributes(t) == {"pk": "S", "sk": "N"}
    assert t["billing_mode"] == "PAY_PER_REQUEST"
    ttl = block(t, "ttl")
    assert ttl == {"attribute_name": "delete_at", "enabled": True}
    assert "stream_enabled" not in t, "history is not presence: no stream"
    sse = block(t, "server_side_encryption")
    assert sse["enabled"] is True
    assert sse["kms_key_arn"] == "${aws_kms_key.sumu.arn}"
    assert t["deletion_protection_enabled"] == "${var.deletion_protection}"


# ---------------------------------------------------------------------------
# SNS / SQS
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["messages", "notifications", "mesh"])
def test_topics_encrypted_with_cmk(tf, name):
    assert res(tf, "aws_sns_topic", name)["kms_master_key_id"] == "${aws_kms_key.sumu.arn}"


@pytest.mark.parametrize("name", ["messages", "notifications", "messages_dlq", "notifications_dlq"])
def test_queues_encrypted_with_cmk(tf, name):
    q = res(tf, "aws_sqs_queue", name)
    assert q["kms_master_key_id"] == "${aws_kms_key.sumu.arn}"
    assert "sqs_managed_sse_enabled" not in q


@pytest.mark.parametrize("queue,dlq", [("messages", "messages_dlq"), ("notifications", "notifications_dlq")])
def test_redrive_to_dlq(tf, queue, dlq):
    q = res(tf, "aws_sqs_queue", queue)
    policy = squash(expr(q["redrive_policy"]))
    assert policy.startswith("jsonencode(")
    assert f"deadLetterTargetArn=aws_sqs_queue.{dlq}.arn" in policy
    assert "maxReceiveCount=var.max_receive_count" in policy
    allow = res(tf, "aws_sqs_queue_redrive_allow_policy", dlq)
    assert allow["queue_url"] == f"${{aws_sqs_queue.{dlq}.id}}"
    allow_policy = squash(expr(allow["redrive_allow_policy"]))
    assert 'redrivePermission="byQueue"' in allow_policy
    assert f"sourceQueueArns=[aws_sqs_queue.{queue}.arn]" in allow_policy
    # DLQs keep messages the maximum time so that operators can inspect them.
    assert res(tf, "aws_sqs_queue", dlq)["message_retention_seconds"] == 1209600


def test_max_receive_count_default(tf):
    v = tf["variable"]["max_receive_count"]
    assert v["default"] == 5
    assert v["type"] == "${number}" or v["type"] == "number"


def test_notifications_topic_subscribed_to_queue_raw(tf):
    sub = res(tf, "aws_sns_topic_subscription", "notifications_to_queue")
    assert sub["topic_arn"] == "${aws_sns_topic.notifications.arn}"
    assert sub["protocol"] == "sqs"
    assert sub["endpoint"] == "${aws_sqs_queue.notifications.arn}"
    assert sub["raw_message_delivery"] is True
    assert "${aws_sqs_queue_policy.notifications}" in sub["depends_on"]


def test_notifications_queue_policy_allows_only_the_topic(tf):
    qp = res(tf, "aws_sqs_queue_policy", "notifications")
    assert qp["queue_url"] == "${aws_sqs_queue.notifications.id}"
    assert qp["policy"] == "${data.aws_iam_policy_document.notifications_queue.json}"
    doc = data(tf, "aws_iam_policy_document", "notifications_queue")
    allows = [s for s in doc["statement"] if s["effect"] == "Allow"]
    assert len(allows) == 1
    allow = allows[0]
    assert allow["actions"] == ["sqs:SendMessage"]
    assert allow["resources"] == ["${aws_sqs_queue.notifications.arn}"]
    assert block(allow, "principals") == {"type": "Service", "identifiers": ["sns.amazonaws.com"]}
    cond = block(allow, "condition")
    assert cond["variable"] == "aws:SourceArn"
    assert cond["test"] in ("ArnEquals", "ArnLike")
    assert cond["values"] == ["${aws_sns_topic.notifications.arn}"]


def test_kms_key_rotation_and_sns_access(tf):
    key = res(tf, "aws_kms_key", "sumu")
    assert key["enable_key_rotation"] is True
    assert key["policy"] == "${data.aws_iam_policy_document.kms.json}"
    doc = data(tf, "aws_iam_policy_document", "kms")
    services = [s for s in doc["statement"] if block(s, "principals")["type"] == "Service"]
    assert services, "SNS needs the key to deliver to the encrypted notifications queue"
    svc = services[0]
    assert "sns.amazonaws.com" in block(svc, "principals")["identifiers"]
    assert set(svc["actions"]) >= {"kms:Decrypt"} and any(a.startswith("kms:GenerateDataKey") for a in svc["actions"])
    conds = {c["variable"]: c for c in svc["condition"]}
    assert conds["aws:SourceAccount"]["values"] == ["${local.account_id}"]
    assert conds["aws:SourceArn"]["values"] == [
        "arn:${local.partition}:sns:${local.region}:${local.account_id}:${local.notifications_topic_name}"]


# ---------------------------------------------------------------------------
# IAM: node role
# ---------------------------------------------------------------------------


def _node_statements(tf):
    doc = data(tf, "aws_iam_policy_document", "node")
    stmts = list(doc["statement"])
    for dyn in doc.get("dynamic", []):
        for _, d in dyn.items():
            stmts.extend(d["content"])
    return stmts


def _statements_with(tf, action):
    return [s for s in _node_statements(tf) if action in s["actions"]]


def test_node_role_assumed_by_ec2_only(tf):
    role = res(tf, "aws_iam_role", "node")
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.node_assume.json}"
    st = block(data(tf, "aws_iam_policy_document", "node_assume"), "statement")
    assert st["actions"] == ["sts:AssumeRole"]
    assert block(st, "principals") == {"type": "Service", "identifiers": ["ec2.amazonaws.com"]}
    assert res(tf, "aws_iam_role_policy", "node")["policy"] == "${data.aws_iam_policy_document.node.json}"
    assert res(tf, "aws_iam_instance_profile", "node")["role"] == "${aws_iam_role.node.name}"


def test_node_policy_has_no_wildcard_actions_and_only_allows(tf):
    for s in _node_statements(tf):
        assert s.get("effect", "Allow") == "Allow"
        for a in s["actions"]:
            assert "*" not in a, f"wildcard action {a}"


def test_node_policy_star_resources_are_unrestrictable_only(tf):
    for s in _node_statements(tf):
        if "*" in s["resources"]:
            assert s["actions"] in (["dynamodb:ListStreams"], ["cloudwatch:PutMetricData"]), s


def test_node_dynamodb_access(tf):
    needed = {"dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query",
              "dynamodb:BatchWriteItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem",
              "dynamodb:DescribeTable"}
    [s] = [s for s in _statements_with(tf, "dynamodb:Query") if s.get("sid") == "Tables"]
    assert set(s["actions"]) == needed
    assert set(s["resources"]) == {
        "${aws_dynamodb_table.connections.arn}",
        "${aws_dynamodb_table.connections.arn}/index/by_node",
        "${aws_dynamodb_table.cluster.arn}",
    }
    [streams] = _statements_with(tf, "dynamodb:GetRecords")
    assert set(streams["actions"]) == {"dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords"}
    assert streams["resources"] == ["${aws_dynamodb_table.connections.arn}/stream/*"]
    assert _statements_with(tf, "dynamodb:ListStreams")
    # The history: exactly the calls the recorder and reader make, on its
    # table only.
    [h] = [s for s in _statements_with(tf, "dynamodb:Query") if s.get("sid") == "History"]
    assert set(h["actions"]) == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                 "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:DescribeTable"}
    assert h["resources"] == ["${aws_dynamodb_table.history.arn}"]
    assert len(_statements_with(tf, "dynamodb:Query")) == 2
    assert not [s for s in _node_statements(tf) if "dynamodb:BatchGetItem" in s["actions"]
                and "${aws_dynamodb_table.history.arn}" not in s["resources"]]
    [scan] = _statements_with(tf, "dynamodb:Scan")
    assert scan["actions"] == ["dynamodb:Scan"]
    assert scan["resources"] == ["${aws_dynamodb_table.cluster.arn}"]


def test_node_sns_access(tf):
    [pub] = _statements_with(tf, "sns:Publish")
    assert set(pub["resources"]) == {"${aws_sns_topic.messages.arn}", "${aws_sns_topic.mesh.arn}"}
    assert "${aws_sns_topic.notifications.arn}" not in pub["resources"]
    [sub] = _statements_with(tf, "sns:Subscribe")
    assert sub["resources"] == ["${aws_sns_topic.mesh.arn}"]
    conds = {c["variable"]: c for c in sub["condition"]}
    assert conds["sns:Protocol"]["values"] == ["sqs"]
    assert conds["sns:Endpoint"]["test"] == "StringLike"
    assert conds["sns:Endpoint"]["values"] == ["${local.inbox_queue_arn_pattern}"]
    [unsub] = _statements_with(tf, "sns:Unsubscribe")
    assert all(r.startswith("${aws_sns_topic.mesh.arn}") for r in unsub["resources"])


def test_inbox_queue_prefix_restriction(tf):
    pattern = tf["locals"]["inbox_queue_arn_pattern"]
    assert pattern.startswith("arn:${local.partition}:sqs:${local.region}:${local.account_id}:")
    assert pattern.endswith(":${local.prefix}Inbox-*")
    for action in ("sqs:CreateQueue", "sqs:DeleteQueue", "sqs:SetQueueAttributes", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"):
        stmts = _statements_with(tf, action)
        assert stmts, f"{action} missing"
        for s in stmts:
            assert s["resources"] == ["${local.inbox_queue_arn_pattern}"], f"{action} must be limited to inbox queues"
    [inbox] = _statements_with(tf, "sqs:CreateQueue")
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage"} <= set(inbox["actions"])


def test_node_sqs_access(tf):
    send = _statements_with(tf, "sqs:SendMessage")
    resources = {r for s in send for r in s["resources"]}
    assert resources == {"${aws_sqs_queue.messages.arn}", "${local.inbox_queue_arn_pattern}"}
    receive = _statements_with(tf, "sqs:ReceiveMessage")
    resources = {r for s in receive for r in s["resources"]}
    assert resources == {"${aws_sqs_queue.notifications.arn}", "${local.inbox_queue_arn_pattern}"}
    [consume] = [s for s in receive if s["resources"] == ["${aws_sqs_queue.notifications.arn}"]]
    assert set(consume["actions"]) == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}


def test_node_kms_metrics_ssm(tf):
    kms = [s for s in _node_statements(tf) if s["resources"] == ["${aws_kms_key.sumu.arn}"]]
    assert len(kms) == 1 and set(kms[0]["actions"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
    [metrics] = _statements_with(tf, "cloudwatch:PutMetricData")
    cond = block(metrics, "condition")
    assert cond["variable"] == "cloudwatch:namespace"
    assert cond["values"] == ["${var.metrics_namespace}"]
    [ssm] = _statements_with(tf, "ssm:GetParameter")
    assert ssm["resources"] == ["${local.api_key_parameter_arn}"]
    [hook] = _statements_with(tf, "autoscaling:CompleteLifecycleAction")
    assert hook["resources"][0].endswith("autoScalingGroupName/${local.asg_name}")


def test_backend_policy(tf):
    doc = data(tf, "aws_iam_policy_document", "backend")
    by_action = {}
    for s in doc["statement"]:
        for a in s["actions"]:
            by_action.setdefault(a, set()).update(s["resources"])
    assert by_action["sqs:SendMessage"] == {"${aws_sqs_queue.notifications.arn}"}
    assert by_action["sns:Publish"] == {"${aws_sns_topic.notifications.arn}"}
    assert by_action["sqs:ReceiveMessage"] == {"${aws_sqs_queue.messages.arn}"}
    assert by_action["sns:Subscribe"] == {"${aws_sns_topic.messages.arn}"}
    assert res(tf, "aws_iam_policy", "backend")["policy"] == "${data.aws_iam_policy_document.backend.json}"


# ---------------------------------------------------------------------------
# Fleet, load balancer, DNS
# ---------------------------------------------------------------------------

REQUIRED_ENV = [
    "SUMU_LISTEN", "SUMU_ENGINE", "SUMU_AWS_REGION", "SUMU_NAME_PREFIX", "SUMU_CONNECTIONS_TABLE",
    "SUMU_CLUSTER_TABLE", "SUMU_MESSAGES_TOPIC_ARN", "SUMU_MESSAGES_QUEUE_URL",
    "SUMU_NOTIFICATIONS_QUEUE_URL", "SUMU_MESH_TOPIC_ARN", "SUMU_PRESENCE_SOURCE", "SUMU_JWKS_URI",
    "SUMU_JWT_AUDIENCES", "SUMU_JWT_ISSUER", "SUMU_VERIFY_TOKEN_EXPIRATION", "SUMU_DRAIN_SECS",
    "SUMU_LOG_FORMAT", "SUMU_HISTORY_TABLE", "SUMU_RECOVERY_WINDOW_SECS",
]


def _split_top_level(text: str):
    """Split an HCL object body on commas that are not nested or quoted."""
    parts, depth, quoted, cur, i = [], 0, False, "", 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                cur += text[i : i + 2]
                i += 2
                continue
            if ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            i += 1
            continue
        cur += ch
        i += 1
    if cur.strip():
        parts.append(cur)
    return parts


def _node_env(tf):
    text = expr(tf["locals"]["node_environment"])
    prefix = "merge(var.extra_environment, local.node_tls_environment, {"
    assert text.startswith(prefix) and text.endswith("})"), "the module's settings must win over extra_environment"
    env = {}
    for part in _split_top_level(text[len(prefix) : -2]):
        key, value = part.split("=", 1)
        env[key.strip()] = value.strip()
    return env


def test_node_environment(tf):
    env = _node_env(tf)
    for key in REQUIRED_ENV:
        assert key in env, f"{key} not passed to the nodes"
    assert "SUMU_API_KEY" not in env, "the API key must come from SSM, not plain user data"
    assert env["SUMU_LISTEN"] == '"0.0.0.0:${var.node_port}"'
    assert env["SUMU_ENGINE"] == '"aws"'
    assert env["SUMU_LOG_FORMAT"] == '"json"'
    assert env["SUMU_CONNECTIONS_TABLE"] == "aws_dynamodb_table.connections.name"
    assert env["SUMU_CLUSTER_TABLE"] == "aws_dynamodb_table.cluster.name"
    assert env["SUMU_HISTORY_TABLE"] == "aws_dynamodb_table.history.name"
    assert env["SUMU_RECOVERY_WINDOW_SECS"].strip() == "tostring(var.recovery_window_seconds)"
    assert env["SUMU_MESSAGES_TOPIC_ARN"] == "aws_sns_topic.messages.arn"
    assert env["SUMU_MESH_TOPIC_ARN"] == "aws_sns_topic.mesh.arn"
    assert env["SUMU_MESSAGES_QUEUE_URL"] == "aws_sqs_queue.messages.url"
    assert env["SUMU_NOTIFICATIONS_QUEUE_URL"] == "aws_sqs_queue.notifications.url"
    assert env["SUMU_JWT_AUDIENCES"].replace(" ", "") == 'join(",",var.authorized_audiences)'
    assert env["SUMU_JWKS_URI"] == "var.issuer_jwks_uri"
    assert env["SUMU_JWT_ISSUER"] == "var.jwt_issuer"
    assert env["SUMU_DRAIN_SECS"].strip() == "tostring(var.drain_seconds)"
    assert "var.verify_token_expiration" in env["SUMU_VERIFY_TOKEN_EXPIRATION"]


def test_user_data_fetches_api_key_from_ssm_and_runs_aws_engine():
    text = (ROOT / "templates" / "user-data.sh.tftpl").read_text()
    assert "ssm get-parameter --with-decryption" in text
    assert "--name '${api_key_parameter_name}'" in text
    assert "export SUMU_API_KEY" in text
    assert "exec /usr/local/bin/sumu-node --engine aws" in text
    assert "EnvironmentFile=/etc/sumu/sumu.env" in text
    assert "complete-lifecycle-action" in text and "target-lifecycle-state" in text
    assert "TimeoutStopSec=${drain_seconds + 30}" in text


def test_the_drain_close_code_named_here_is_the_nodes():
    """The node's drain closes sockets with 1012 "service restart" (its
    --drain-close-code default, which common clients reconnect on); the
    module's comments and README must not say 1001 (issue 17 item 12)."""
    files = [*TF_FILES, ROOT / "README.md", *sorted((ROOT / "templates").glob("*"))]
    stale = [
        f"{path.name}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\b1001\b", line)
    ]
    assert not stale, stale
    said = sum("1012" in path.read_text() for path in files)
    assert said >= 3, "the drain's close code is named where the drain is described"


def test_user_data_template_is_valid_bash(tmp_path):
    text = (ROOT / "templates" / "user-data.sh.tftpl").read_text()
    # Crude rendering: drop directive lines, replace interpolations.
    lines = [l for l in text.splitlines() if not l.strip().startswith("%{")]
    rendered = re.sub(r"\$\{[^}]*\}", "X", "\n".join(lines)) + "\n"
    script = tmp_path / "user-data.sh"
    script.write_text(rendered)
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # bash only warns about an unterminated here-document; treat it as an error.
    assert proc.stderr == "", proc.stderr


def test_user_data_template_variables_are_passed(tf):
    text = (ROOT / "templates" / "user-data.sh.tftpl").read_text()
    ident = r"([a-z_][a-z0-9_]*)"
    used = set(re.findall(r"\$\{\s*" + ident, text)) | set(re.findall(r"%\{\s*(?:if|for \w+, \w+ in)\s+" + ident, text))
    loop_vars = {v for pair in re.findall(r"%\{\s*for (\w+), (\w+) in", text) for v in pair}
    used -= {"replace"} | loop_vars
    call = expr(tf["locals"]["user_data"])
    passed = set(re.findall(r"(\w+)\s*=", call.split("{", 1)[1]))
    assert used, "template uses no variables?"
    assert used <= passed, f"template variables not passed: {used - passed}"


def test_launch_template_hardening(tf):
    lt = res(tf, "aws_launch_template", "node")
    md = block(lt, "metadata_options")
    assert md["http_tokens"] == "required"
    assert md["http_put_response_hop_limit"] == 1
    ebs = block(block(lt, "block_device_mappings"), "ebs")
    assert ebs["encrypted"] is True
    ni = block(lt, "network_interfaces")
    assert ni["associate_public_ip_address"] is False
    assert ni["security_groups"] == ["${aws_security_group.node.id}"]
    assert block(lt, "iam_instance_profile")["arn"] == "${aws_iam_instance_profile.node.arn}"
    assert expr(lt["user_data"]) == "base64encode(local.user_data)"


def test_asg_behind_target_group_with_drain_hook(tf):
    asg = res(tf, "aws_autoscaling_group", "nodes")
    assert squash(asg["target_group_arns"]) == "${concat([aws_lb_target_group.nodes.arn],aws_lb_target_group.nodes_plain[*].arn)}"
    assert asg["health_check_type"] == "ELB"
    assert asg["vpc_zone_identifier"] == "${var.private_subnet_ids}"
    assert asg["min_size"] == "${var.min_size}" and asg["max_size"] == "${var.max_size}"
    lt = block(asg, "launch_template")
    assert lt["id"] == "${aws_launch_template.node.id}"
    hook = block(asg, "initial_lifecycle_hook")
    assert hook["lifecycle_transition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hook["name"] == "${local.lifecycle_hook_name}"
    assert hook["heartbeat_timeout"] == "${local.lifecycle_heartbeat_seconds}"
    assert squash(expr(tf["locals"]["lifecycle_heartbeat_seconds"])).startswith("var.drain_seconds+")
    assert block(asg, "instance_refresh")["strategy"] == "Rolling"
    conds = [squash(p["condition"]) for p in block(asg, "lifecycle")["precondition"]]
    assert "${var.min_size<=var.max_size}" in conds


def test_scaling_on_cpu_and_on_sockets_per_node(tf):
    cpu = res(tf, "aws_autoscaling_policy", "cpu")
    sockets = res(tf, "aws_autoscaling_policy", "sockets")
    for policy in (cpu, sockets):
        assert policy["autoscaling_group_name"] == "${aws_autoscaling_group.nodes.name}"
        assert policy["policy_type"] == "TargetTrackingScaling"
    assert squash(sockets["count"]) == "${var.target_sockets_per_node==null?0:1}"
    tracking = block(sockets, "target_tracking_configuration")
    assert tracking["target_value"] == "${var.target_sockets_per_node}"
    metric = block(tracking, "customized_metric_specification")
    # What the node publishes (node/src/engine/aws/sockets_metric.rs).
    assert metric["metric_name"] == "Sockets"
    assert metric["namespace"] == "${var.metrics_namespace}"
    assert metric["statistic"] == "Average"
    dim = block(metric, "metric_dimension")
    assert dim["name"] == "Fleet" and dim["value"] == "${local.prefix}"
    rust = (ROOT.parent.parent / "node/src/engine/aws/sockets_metric.rs").read_text()
    assert 'METRIC_NAME: &str = "Sockets"' in rust and 'DIMENSION: &str = "Fleet"' in rust
    # The node's dimension value is its name prefix, its namespace the same variable.
    env = _node_env(tf)
    assert env["SUMU_NAME_PREFIX"] == "local.prefix"
    assert env["SUMU_METRICS_NAMESPACE"] == "var.metrics_namespace"


def test_target_group_health_check_and_deregistration(tf):
    tg = res(tf, "aws_lb_target_group", "nodes")
    assert tg["protocol"] == "TCP"
    assert tg["port"] == "${local.wss_target_port}"
    assert squash(expr(tf["locals"]["wss_target_port"])) == "local.tls_on_node?var.node_tls_port:var.node_port"
    assert tg["target_type"] == "instance"
    assert tg["deregistration_delay"] == "${var.drain_seconds}"
    # The node closes its own sockets while draining; the NLB must not cut them.
    assert tg["connection_termination"] is False
    hc = block(tg, "health_check")
    assert hc["protocol"] == "HTTP"
    assert hc["path"] == "/readyz"
    # Health checks always hit the plain port (no certificate needed), also
    # when the traffic port is the node's TLS port.
    assert hc["port"] == "${tostring(var.node_port)}"
    assert hc["matcher"] == "200"
    # drain_seconds must fit the NLB's deregistration delay range.
    cond = tf["variable"]["drain_seconds"]["validation"][0]["condition"]
    assert "3600" in cond


def test_lb_names_are_valid_for_every_allowed_prefix(tf):
    # ELB names: [A-Za-z0-9-], 1-32 characters, no leading or trailing '-'.
    # Evaluate the naming locals for the extremes name_prefix allows.
    loc = tf["locals"]
    assert squash(expr(loc["lb_name_base"])) == 'substr(trim(replace(lower(local.prefix),"_","-"),"-"),0,26)'
    assert res(tf, "aws_lb", "nlb")["name"] == "${local.nlb_name}"
    assert res(tf, "aws_lb_target_group", "nodes")["name"] == "${local.target_group_name}"
    for prefix in ["Sumu", "A", "S" * 32, "My_Prefix_", "a-" * 16, "Z_" * 16]:
        assert validation_passes(tf, "name_prefix", prefix)
        base = prefix.lower().replace("_", "-").strip("-")[:26]
        for template in (loc["nlb_name"], loc["target_group_name"]):
            name = template.replace("${local.lb_name_base}", base)
            assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}[a-z0-9]", name), (prefix, name)


def test_nlb(tf):
    lb = res(tf, "aws_lb", "nlb")
    assert lb["load_balancer_type"] == "network"
    assert lb["subnets"] == "${var.public_subnet_ids}"
    assert lb["internal"] == "${var.internal_nlb}"
    assert lb["security_groups"] == ["${aws_security_group.nlb.id}"]


def test_tls_listener(tf):
    l = res(tf, "aws_lb_listener", "tls")
    assert l["load_balancer_arn"] == "${aws_lb.nlb.arn}"
    assert l["protocol"] == "TLS"
    assert l["port"] == "${var.tls_port}"
    assert l["certificate_arn"] == "${var.certificate_arn}"
    assert l["ssl_policy"] == "${var.ssl_policy}"
    assert squash(expr(l["count"])) == "local.tls_on_node?0:1", "TLS listener only when TLS ends on the NLB"
    [pre] = block(l, "lifecycle")["precondition"]
    assert squash(pre["condition"]) == "${var.certificate_arn!=null}"
    action = block(l, "default_action")
    assert action == {"type": "forward", "target_group_arn": "${aws_lb_target_group.nodes.arn}"}
    assert tf["variable"]["tls_port"]["default"] == 443
    assert tf["variable"]["ssl_policy"]["default"].startswith("ELBSecurityPolicy-TLS13-1-2")


def test_plain_tcp_listener_is_opt_in(tf):
    l = res(tf, "aws_lb_listener", "plain")
    assert l["protocol"] == "TCP"
    assert squash(expr(l["count"])) == "var.enable_plain_tcp_listener?1:0"
    assert tf["variable"]["enable_plain_tcp_listener"]["default"] is False
    assert squash(block(l, "default_action")["target_group_arn"]) == (
        "${local.tls_on_node?aws_lb_target_group.nodes_plain[0].arn:aws_lb_target_group.nodes.arn}")
    ing = res(tf, "aws_vpc_security_group_ingress_rule", "nlb_plain")
    assert "var.enable_plain_tcp_listener" in ing["for_each"]


def test_security_groups(tf):
    node_in = res(tf, "aws_vpc_security_group_ingress_rule", "node_from_nlb")
    assert node_in["security_group_id"] == "${aws_security_group.node.id}"
    assert node_in["referenced_security_group_id"] == "${aws_security_group.nlb.id}"
    assert node_in["from_port"] == node_in["to_port"] == "${var.node_port}"
    assert "cidr_ipv4" not in node_in, "nodes are reachable only through the NLB"
    tls_in = res(tf, "aws_vpc_security_group_ingress_rule", "nlb_tls")
    assert tls_in["from_port"] == tls_in["to_port"] == "${var.tls_port}"
    assert "var.allowed_client_cidrs" in tls_in["for_each"]
    ingress = [b for (t, _), b in tf["resource"].items() if t == "aws_vpc_security_group_ingress_rule"]
    for rule in ingress:
        assert rule.get("ip_protocol") != "-1", "no all-protocol ingress"


def test_route53_alias(tf):
    r = res(tf, "aws_route53_record", "nlb")
    assert r["zone_id"] == "${var.route53_zone_id}"
    assert r["name"] == "${var.domain_name}"
    assert r["type"] == "A"
    alias = block(r, "alias")
    assert alias["name"] == "${aws_lb.nlb.dns_name}"
    assert alias["zone_id"] == "${aws_lb.nlb.zone_id}"


# ---------------------------------------------------------------------------
# Alarms
# ---------------------------------------------------------------------------


def test_dlq_alarms(tf):
    a = res(tf, "aws_cloudwatch_metric_alarm", "dlq_depth")
    assert a["for_each"] == "${local.dlqs}"
    dlqs = tf["locals"]["dlqs"]
    assert set(dlqs.values()) == {"${aws_sqs_queue.messages_dlq.name}", "${aws_sqs_queue.notifications_dlq.name}"}
    assert a["namespace"] == "AWS/SQS"
    assert a["metric_name"] == "ApproximateNumberOfMessagesVisible"
    assert a["dimensions"] == {"QueueName": "${each.value}"}
    assert a["comparison_operator"] == "GreaterThanThreshold"
    assert a["threshold"] == "${var.dlq_alarm_threshold}"
    assert a["alarm_actions"] == "${var.alarm_actions}"


def test_stream_lag_alarm_matches_node_permission(tf):
    a = res(tf, "aws_cloudwatch_metric_alarm", "stream_lag")
    assert a["namespace"] == "${var.metrics_namespace}"
    assert a["metric_name"] == "PresenceStreamIteratorAge"
    assert a["dimensions"] == {"TableName": "${local.connections_table_name}"}
    assert a["comparison_operator"] == "GreaterThanThreshold"
    assert squash(expr(a["threshold"])) == "var.stream_lag_alarm_threshold_seconds*1000"
    assert a["treat_missing_data"] == "${var.stream_lag_treat_missing_data}"
    assert tf["variable"]["stream_lag_treat_missing_data"]["default"] == "breaching"
    readme = (ROOT / "README.md").read_text()
    assert "PresenceStreamIteratorAge" in readme and "TableName" in readme


def test_healthy_host_alarm(tf):
    a = res(tf, "aws_cloudwatch_metric_alarm", "healthy_nodes")
    assert a["namespace"] == "AWS/NetworkELB"
    assert a["metric_name"] == "HealthyHostCount"
    assert a["dimensions"]["TargetGroup"] == "${aws_lb_target_group.nodes.arn_suffix}"


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------


def test_outputs_for_backends(tf):
    out = tf["output"]
    assert out["wss_url"]["value"] == "wss://${var.domain_name}${local.wss_port_suffix}/push"
    expected = {
        "messages_topic_arn": "${aws_sns_topic.messages.arn}",
        "notifications_topic_arn": "${aws_sns_topic.notifications.arn}",
        "mesh_topic_arn": "${aws_sns_topic.mesh.arn}",
        "messages_queue_url": "${aws_sqs_queue.messages.url}",
        "notifications_queue_url": "${aws_sqs_queue.notifications.url}",
        "messages_dlq_url": "${aws_sqs_queue.messages_dlq.url}",
        "notifications_dlq_url": "${aws_sqs_queue.notifications_dlq.url}",
        "kms_key_arn": "${aws_kms_key.sumu.arn}",
        "backend_policy_arn": "${aws_iam_policy.backend.arn}",
    }
    for name, value in expected.items():
        assert out[name]["value"] == value, name
    for name, body in out.items():
        assert body.get("description"), f"output {name} has no description"


# ---------------------------------------------------------------------------
# Variables: types, descriptions, and validations evaluated
# ---------------------------------------------------------------------------


class _Fail(Exception):
    pass


def _regex(pattern, s):
    if not isinstance(s, str):
        raise _Fail("regex on non-string")
    m = re.search(pattern, s)
    if not m:
        raise _Fail("no match")
    return m.group(0)


def _can(fn):
    try:
        fn()
        return True
    except Exception:  # noqa: BLE001 - HCL can() swallows every error
        return False


def _try(fn, fallback):
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return fallback


def _cidrhost(cidr, n):
    if not isinstance(cidr, str) or "/" not in cidr:
        raise _Fail("not a CIDR")
    return str(ipaddress.ip_network(cidr, strict=False)[n])


_FUNCS = {
    "regex": _regex,
    "can": _can,
    "try_": _try,
    "floor": math.floor,
    "length": len,
    "alltrue": all,
    "contains": lambda lst, v: v in lst,
    "keys": lambda m: sorted(m.keys()),
    "startswith": lambda s, p: s.startswith(p),
    "cidrhost": _cidrhost,
}


def hcl_condition_to_python(condition: str) -> str:
    """Translate the HCL subset used by this module's validations to Python."""
    text = expr(condition)
    literals = []

    def keep(m):
        literals.append(_decode_literal(m.group(1)))
        return f"__L{len(literals) - 1}__"

    text = re.sub(r'"((?:[^"\\]|\\.)*)"', keep, text)
    assert '"' not in text
    text = re.sub(r"\[for (\w+) in (.+?) : (.+?)\]", r"[\3 for \1 in \2]", text)
    text = text.replace("&&", " and ").replace("||", " or ")
    text = re.sub(r"!(?!=)", " not ", text)
    text = re.sub(r"\bvar\.(\w+)", r"V['\1']", text)
    text = re.sub(r"(V\['\w+'\])\.(\w+)", r"\1['\2']", text)  # object attributes
    text = re.sub(r"\bnull\b", "None", text)
    text = re.sub(r"\btrue\b", "True", text)
    text = re.sub(r"\bfalse\b", "False", text)
    text = re.sub(r"\bcan\(", "can(lambda: ", text)
    text = re.sub(r"\btry\(", "try_(lambda: ", text)
    for i, lit in enumerate(literals):
        text = text.replace(f"__L{i}__", repr(lit))
    return text


def validation_passes(tf, name, value) -> bool:
    var = tf["variable"][name]
    for v in var["validation"]:
        code = hcl_condition_to_python(v["condition"])
        env = dict(_FUNCS)
        env["V"] = {name: value}
        env["__builtins__"] = {}
        # One namespace as globals: lambdas and comprehensions resolve names there.
        if not eval(code, env):  # noqa: S307 - our own .tf files
            return False
    return True


# name -> (values that must be accepted, values that must be rejected)
VALIDATION_CASES = {
    "name_prefix": (["Sumu", "Prod_ws-1", "A"], ["", "1Sumu", "Su mu", "Sumu.", "S" * 33]),
    "vpc_id": (["vpc-0123abcd"], ["vpc-", "subnet-0123", "VPC-0123"]),
    "public_subnet_ids": ([["subnet-0a1b"], ["subnet-1", "subnet-2"]], [[], ["sg-123"], ["subnet-1", "vpc-1"]]),
    "private_subnet_ids": ([["subnet-0a1b"]], [[], ["subnet-"]]),
    "allowed_client_cidrs": ([["0.0.0.0/0"], ["10.0.0.0/8", "192.168.1.0/24"]], [[], ["10.0.0.0"], ["300.0.0.0/8"], ["nope"]]),
    "tls_termination": (["nlb", "node"], ["NLB", "both", ""]),
    "node_tls_port": ([8443, 1024, 65535], [443, 8080.5, 65536]),
    "node_tls_secret_arn": ([None, "arn:aws:secretsmanager:us-east-1:123456789012:secret:sumu/tls-AbCdEf"],
                            ["sumu/tls", "arn:aws:ssm:us-east-1:123456789012:parameter/x", "arn:aws:secretsmanager:us-east-1:1:secret:x"]),
    "node_tls_ssm_parameter_names": ([None, {"certificate": "/sumu/tls/cert", "private_key": "/sumu/tls/key"}],
                                     [{"certificate": "sumu/cert", "private_key": "/sumu/key"},
                                      {"certificate": "/sumu/x", "private_key": "/sumu/x"},
                                      {"certificate": "/sumu/cert", "private_key": "/bad key"}]),
    "node_tls_kms_key_arn": ([None, "arn:aws:kms:us-east-1:123456789012:key/1234abcd"], ["alias/aws/secretsmanager", "key/1"]),
    "node_tls_refresh_minutes": ([5, 60, 1440], [4, 1441, 7.5]),
    "certificate_arn": ([None, "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123"],
                        ["arn:aws:iam::123456789012:server-certificate/x", "abc", "arn:aws:acm:eu-west-1:1234:certificate/x"]),
    "tls_port": ([443, 8443, 1, 65535], [0, 65536, 443.5]),
    "ssl_policy": (["ELBSecurityPolicy-TLS13-1-2-2021-06", "ELBSecurityPolicy-TLS13-1-3-2021-06", "ELBSecurityPolicy-TLS-1-2-2017-01"],
                   ["ELBSecurityPolicy-2016-08", "ELBSecurityPolicy-TLS-1-1-2017-01", "ELBSecurityPolicy-TLS13-1-0-2021-06"]),
    "plain_tcp_port": ([80, 8080], [0, 70000]),
    "nlb_access_logs_bucket": ([None, "my-logs.bucket"], ["My_Bucket", "a"]),
    "route53_zone_id": (["Z0123456789ABCDEFGHIJ"], ["0123", "zabc", ""]),
    "domain_name": (["ws.example.com", "a-b.c.example.io"], ["example", "WS.example.com", "-ws.example.com", "ws.example.com."]),
    "instance_type": (["c6i.large", "c7gn.2xlarge"], ["large", "c6i", "C6I.LARGE"]),
    "architecture": (["x86_64", "arm64"], ["amd64", "aarch64"]),
    "ami_id": ([None, "ami-0abc123"], ["ami-", "abc"]),
    "node_binary_s3_uri": ([None, "s3://my-bucket/releases/sumu-node"], ["https://x/y", "s3://my-bucket", "s3://B/x"]),
    "root_volume_size_gb": ([8, 20, 1024], [4, 2048]),
    "min_size": ([1, 3], [0, -1, 1.5]),
    "max_size": ([1, 1000], [0, 1001, 2.5]),
    "desired_capacity": ([None, 1, 4], [0, 2.5]),
    "target_cpu_utilization": ([None, 60, 100], [0, 101, -5]),
    "target_sockets_per_node": ([None, 100, 40000, 1000000], [0, 99, 1000001, 2.5]),
    "node_port": ([8080, 1024, 65535], [80, 65536, 8080.5]),
    "drain_seconds": ([1, 60, 3600], [0, 3601, 1.5]),
    "recovery_window_seconds": ([0, 120, 604800], [-1, 604801, 1.5]),
    "connections_capacity": (["on-demand", "provisioned"], ["PROVISIONED", "PAY_PER_REQUEST", ""]),
    "connections_min_capacity": ([1, 25, 40000], [0, 40001, 2.5]),
    "connections_max_capacity": ([1, 10000, 40000], [0, 40001, 2.5]),
    "connections_target_utilization": ([20, 70, 90], [19, 91]),
    "extra_environment": ([{}, {"SUMU_ALLOWED_ORIGINS": "https://a"}],
                          [{"PATH": "/bin"}, {"SUMU_API_KEY": "secret"}, {"sumu_x": "1"}]),
    "issuer_jwks_uri": (["https://idp.example.com/.well-known/jwks.json"], ["http://idp.example.com/jwks", "idp.example.com", "https://a b"]),
    "authorized_audiences": ([[], ["api"], ["a", "b"]], [[""], ["a,b"], ["ok", ""]]),
    "presence_source": (["topic", "queue", "none"], ["sns", "", "TOPIC"]),
    "api_key_ssm_parameter_name": ([None, "/sumu/api-key", "/a/b_c.d"], ["sumu/api-key", "/bad key"]),
    "api_key_kms_key_arn": ([None, "arn:aws:kms:us-east-1:123456789012:key/1234abcd"], ["alias/aws/ssm", "arn:aws:kms:us-east-1:1:key/x"]),
    "kms_key_deletion_window_days": ([7, 30], [6, 31]),
    "max_receive_count": ([1, 5, 1000], [0, 1001, 2.5]),
    "queue_visibility_timeout_seconds": ([0, 30, 43200], [-1, 43201]),
    "queue_message_retention_seconds": ([60, 1209600], [59, 1209601]),
    "alarm_actions": ([[], ["arn:aws:sns:us-east-1:123456789012:ops"]], [["ops-topic"]]),
    "dlq_alarm_threshold": ([0, 10], [-1]),
    "metrics_namespace": (["Sumu", "Company/Sumu"], ["AWS/Sumu", "", "has space"]),
    "stream_lag_alarm_threshold_seconds": ([1, 60, 86400], [0, 86401]),
    "stream_lag_treat_missing_data": (["breaching", "notBreaching", "ignore", "missing"], ["yes", "Breaching"]),
}


def test_every_variable_has_type_and_description(tf):
    for name, var in tf["variable"].items():
        assert var.get("type"), f"variable {name} has no type"
        assert var.get("description"), f"variable {name} has no description"


def test_every_validated_variable_has_cases(tf):
    validated = {n for n, v in tf["variable"].items() if v.get("validation")}
    assert validated == set(VALIDATION_CASES), (
        f"missing cases: {validated - set(VALIDATION_CASES)}, stale cases: {set(VALIDATION_CASES) - validated}")
    for name in validated:
        for v in tf["variable"][name]["validation"]:
            assert v.get("error_message"), f"{name}: validation without error_message"


@pytest.mark.parametrize("name", sorted(VALIDATION_CASES))
def test_variable_validation(tf, name):
    good, bad = VALIDATION_CASES[name]
    for value in good:
        assert validation_passes(tf, name, value), f"{name} should accept {value!r}"
    for value in bad:
        assert not validation_passes(tf, name, value), f"{name} should reject {value!r}"
    default = tf["variable"][name].get("default", "__required__")
    if default not in ("__required__", None):
        assert validation_passes(tf, name, default), f"{name}: default {default!r} fails its own validation"


def test_required_variables(tf):
    required = {n for n, v in tf["variable"].items() if "default" not in v}
    assert required == {
        "vpc_id", "public_subnet_ids", "private_subnet_ids", "route53_zone_id",
        "domain_name", "issuer_jwks_uri",
    }


# ---------------------------------------------------------------------------
# README example and checkov skips
# ---------------------------------------------------------------------------


def _readme_module_blocks():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:hcl|terraform)\n(.*?)```", readme, re.S)
    modules = []
    for text in blocks:
        doc = hcl2.loads(text)
        for entry in doc.get("module", []):
            for name, body in entry.items():
                modules.append((_norm_key(name), _norm(body)))
    return modules


def test_readme_example_root_module_sets_every_required_variable(tf):
    modules = _readme_module_blocks()
    assert modules, "README has no example module block"
    required = {n for n, v in tf["variable"].items() if "default" not in v}
    known = set(tf["variable"])
    for name, body in modules:
        args = set(body) - {"source", "providers", "depends_on", "count", "for_each"}
        assert required <= args, f"module {name} misses {required - args}"
        assert args <= known, f"module {name} sets unknown variables {args - known}"


def test_readme_example_values_pass_validation(tf):
    checked = 0
    for _, body in _readme_module_blocks():
        for arg, value in body.items():
            if arg in tf["variable"] and tf["variable"][arg].get("validation"):
                if isinstance(value, str) and "${" in value:
                    continue  # an expression, not a literal
                assert validation_passes(tf, arg, value), f"README example: {arg} = {value!r} is rejected"
                checked += 1
    assert checked >= 8


def test_readme_documents_every_variable(tf):
    readme = (ROOT / "README.md").read_text()
    for name in tf["variable"]:
        assert f"`{name}`" in readme, f"README does not describe variable {name}"


def test_checkov_skips_carry_reasons():
    skips = []
    for path in TF_FILES:
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                m = re.fullmatch(r"\s*#checkov:skip=(CKV2?_AWS_\d+):(.{20,})", line)
                assert m, f"{path.name}: skip without a reason: {line.strip()}"
                skips.append(m.group(1))


# ---------------------------------------------------------------------------
# Where TLS ends: tls_termination = "nlb" | "node"
# ---------------------------------------------------------------------------

TEMPLATE = ROOT / "templates" / "user-data.sh.tftpl"


def test_tls_termination_defaults_to_the_nlb(tf):
    assert tf["variable"]["tls_termination"]["default"] == "nlb"
    assert squash(expr(tf["locals"]["tls_on_node"])) == 'var.tls_termination=="node"'
    assert tf["variable"]["node_tls_port"]["default"] == 8443
    assert tf["variable"]["node_tls_refresh_minutes"]["default"] == 60
    for name in ("certificate_arn", "node_tls_secret_arn", "node_tls_ssm_parameter_names", "node_tls_kms_key_arn"):
        assert tf["variable"][name]["default"] is None, name


def test_tls_passthrough_listener_only_with_tls_on_the_node(tf):
    l = res(tf, "aws_lb_listener", "tls_passthrough")
    assert squash(expr(l["count"])) == "local.tls_on_node?1:0"
    assert l["protocol"] == "TCP"
    assert l["port"] == "${var.tls_port}"
    assert "certificate_arn" not in l and "ssl_policy" not in l
    assert block(l, "default_action") == {"type": "forward", "target_group_arn": "${aws_lb_target_group.nodes.arn}"}
    # Exactly one wss listener exists in either mode.
    tls_count = squash(expr(res(tf, "aws_lb_listener", "tls")["count"]))
    assert tls_count == "local.tls_on_node?0:1"


def test_plain_target_group_for_the_plain_listener_with_tls_on_the_node(tf):
    tg = res(tf, "aws_lb_target_group", "nodes_plain")
    assert squash(expr(tg["count"])) == "local.tls_on_node&&var.enable_plain_tcp_listener?1:0"
    assert tg["port"] == "${var.node_port}"
    assert tg["name"] == "${local.plain_target_group_name}"
    main = res(tf, "aws_lb_target_group", "nodes")
    for key in ("protocol", "target_type", "vpc_id", "preserve_client_ip", "deregistration_delay", "connection_termination"):
        assert tg[key] == main[key], key
    assert block(tg, "health_check") == block(main, "health_check")
    for prefix in ["Sumu", "S" * 32]:
        base = prefix.lower()[:26]
        name = tf["locals"]["plain_target_group_name"].replace("${local.lb_name_base}", base)
        assert len(name) <= 32


def test_node_tls_security_group_rules(tf):
    egress = res(tf, "aws_vpc_security_group_egress_rule", "nlb_to_nodes_tls")
    ingress = res(tf, "aws_vpc_security_group_ingress_rule", "node_tls_from_nlb")
    for rule, sg, ref in ((egress, "nlb", "node"), (ingress, "node", "nlb")):
        assert squash(expr(rule["count"])) == "local.tls_on_node?1:0"
        assert rule["from_port"] == rule["to_port"] == "${var.node_tls_port}"
        assert rule["security_group_id"] == f"${{aws_security_group.{sg}.id}}"
        assert rule["referenced_security_group_id"] == f"${{aws_security_group.{ref}.id}}"
        assert "cidr_ipv4" not in rule


def test_node_tls_environment(tf):
    text = squash(expr(tf["locals"]["node_tls_environment"]))
    assert text.startswith("local.tls_on_node?{") and text.endswith("}:{}")
    assert 'SUMU_TLS_LISTEN="0.0.0.0:${var.node_tls_port}"' in text
    assert "SUMU_TLS_CERT=local.node_tls_cert_path" in text
    assert "SUMU_TLS_KEY=local.node_tls_key_path" in text
    loc = tf["locals"]
    assert loc["node_tls_cert_path"] == "/etc/sumu/tls/current/fullchain.pem"
    assert loc["node_tls_key_path"] == "/etc/sumu/tls/current/privkey.pem"


def _tls_statements(tf):
    return {s.get("sid"): s for s in _node_statements(tf)
            if any(a.startswith(("secretsmanager:", "ssm:GetParameters")) for a in s["actions"])
            or s.get("sid") == "DecryptNodeTls"}


def test_node_tls_iam_is_least_privilege(tf):
    doc = data(tf, "aws_iam_policy_document", "node")
    dyn = {}
    for entry in doc["dynamic"]:
        for _, d in entry.items():
            dyn[d["content"][0]["sid"]] = d
    stmts = _tls_statements(tf)
    assert set(stmts) == {"ReadNodeTlsSecret", "ReadNodeTlsParameters", "DecryptNodeTls"}
    secret = stmts["ReadNodeTlsSecret"]
    assert secret["actions"] == ["secretsmanager:GetSecretValue"]
    assert secret["resources"] == ["${statement.value}"]
    assert squash(expr(dyn["ReadNodeTlsSecret"]["for_each"])) == (
        "local.tls_on_node&&var.node_tls_secret_arn!=null?[var.node_tls_secret_arn]:[]")
    params = stmts["ReadNodeTlsParameters"]
    assert params["actions"] == ["ssm:GetParameters"]
    assert params["resources"] == "${statement.value}"
    assert squash(expr(dyn["ReadNodeTlsParameters"]["for_each"])) == (
        "local.tls_on_node&&var.node_tls_ssm_parameter_names!=null?[local.node_tls_parameter_arns]:[]")
    arns = squash(expr(tf["locals"]["node_tls_parameter_arns"]))
    assert '"arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${n}"' in arns
    assert "var.node_tls_ssm_parameter_names.certificate,var.node_tls_ssm_parameter_names.private_key" in arns
    kms = stmts["DecryptNodeTls"]
    assert kms["actions"] == ["kms:Decrypt"]
    cond = block(kms, "condition")
    assert cond["variable"] == "kms:ViaService" and cond["values"] == ["${local.node_tls_via_service}"]
    via = expr(tf["locals"]["node_tls_via_service"])
    assert "secretsmanager.${local.node_tls_secret_region}.amazonaws.com" in via and "ssm.${local.region}.amazonaws.com" in via
    # Nothing else may read secrets.
    for s in _node_statements(tf):
        if s.get("sid") not in stmts:
            assert not any(a.startswith("secretsmanager:") for a in s["actions"]), s


def test_launch_template_requires_one_certificate_source_with_tls_on_the_node(tf):
    lt = res(tf, "aws_launch_template", "node")
    conds = [squash(p["condition"]) for p in block(lt, "lifecycle")["precondition"]]
    assert "${!local.tls_on_node||((var.node_tls_secret_arn==null)!=(var.node_tls_ssm_parameter_names==null))}" in conds
    assert "${!local.tls_on_node||var.node_tls_port!=var.node_port}" in conds


def test_tls_outputs(tf):
    out = tf["output"]
    assert out["tls_termination"]["value"] == "${var.tls_termination}"
    assert squash(expr(out["node_tls_listen"]["value"])) == 'local.tls_on_node?"0.0.0.0:${var.node_tls_port}":null'
    assert "node_tls_certificate_source" in out


def test_readme_explains_the_tls_cost_trade_off():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Where TLS ends", 1)[1].split("\n## ", 1)[0]
    for figure in ("100,000", "3,000", "$0.006", "$0.0225", "$60", "$1,460", "tls_termination"):
        assert figure in section, figure


# A small renderer of this template's subset of Terraform's template language:
# whole-line %{ if }/%{ else }/%{ endif }/%{ for k, v in m }/%{ endfor }
# directives and ${expr} interpolations whose expressions are also Python.

def render_template(text: str, values: dict) -> str:
    env = dict(values, replace=lambda s, a, b: s.replace(a, b))

    def interpolate(line, scope):
        return re.sub(r"\$\{(.*?)\}", lambda m: str(eval(m.group(1), {"__builtins__": {}}, scope)), line)  # noqa: S307

    def run(lines, scope):
        out, stack, i = [], [], 0
        while i < len(lines):
            line = lines[i]
            m = re.fullmatch(r"\s*%\{\s*(if|else|endif|for|endfor)\b(.*?)~?\}\s*", line)
            live = all(taken for taken, _ in stack)
            if not m:
                if live:
                    out.append(interpolate(line, scope))
            elif m.group(1) == "if":
                cond = bool(eval(m.group(2).strip(), {"__builtins__": {}}, scope)) if live else False  # noqa: S307
                stack.append((cond, cond))
            elif m.group(1) == "else":
                _, cond = stack.pop()
                stack.append((not cond, cond))
            elif m.group(1) == "endif":
                stack.pop()
            elif m.group(1) == "for":
                k, v, coll = re.fullmatch(r"\s*(\w+),\s*(\w+)\s+in\s+(\w+)\s*", m.group(2)).groups()
                depth, j = 1, i + 1
                while depth:
                    if re.fullmatch(r"\s*%\{\s*for\b.*", lines[j]):
                        depth += 1
                    if re.fullmatch(r"\s*%\{\s*endfor\b.*", lines[j]):
                        depth -= 1
                    j += 1
                if live:
                    for key, value in scope[coll].items():
                        out.extend(run(lines[i + 1 : j - 1], dict(scope, **{k: key, v: value})))
                i = j
                continue
            i += 1
        assert not stack, "unbalanced %{ if }"
        return out

    return "\n".join(run(text.splitlines(), env)) + "\n"


def _template_values(mode="nlb", source="secretsmanager"):
    return {
        "environment": {"SUMU_LISTEN": "0.0.0.0:8080", "SUMU_X": 'a"b\\c'},
        "api_key_parameter_name": "/Sumu/api-key",
        "region": "us-east-1",
        "node_binary_s3_uri": "",
        "drain_seconds": 60,
        "asg_name": "SumuNodes",
        "lifecycle_hook_name": "SumuDrain",
        "tls_on_node": mode == "node",
        "node_tls_source": source,
        "node_tls_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sumu/tls-AbCdEf" if source == "secretsmanager" else "",
        "node_tls_secret_region": "eu-west-1",
        "node_tls_cert_param": "/sumu/tls/cert" if source == "ssm" else "",
        "node_tls_key_param": "/sumu/tls/key" if source == "ssm" else "",
        "node_tls_refresh_min": 60,
    }


RENDER_CASES = [("nlb", "secretsmanager"), ("node", "secretsmanager"), ("node", "ssm")]


def test_template_values_match_what_terraform_passes(tf):
    call = expr(tf["locals"]["user_data"])
    passed = set(re.findall(r"(?<![.\w])(\w+)\s*=(?!=)", call.split("{", 1)[1]))
    assert passed == set(_template_values()), passed ^ set(_template_values())


@pytest.mark.parametrize("mode,source", RENDER_CASES, ids=[f"{m}-{s}" for m, s in RENDER_CASES])
def test_rendered_user_data_is_valid_bash_in_each_mode(tmp_path, mode, source):
    rendered = render_template(TEMPLATE.read_text(), _template_values(mode, source))
    assert "%{" not in rendered and "${" not in rendered.replace("$${", "")
    script = tmp_path / "user-data.sh"
    script.write_text(rendered)
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    fetch = "/usr/local/bin/sumu-tls-fetch"
    if mode == "nlb":
        assert fetch not in rendered and "ExecReload" not in rendered and "sumu-tls-fetch.timer" not in rendered
        return
    # The certificate is fetched before sumu-node starts, the timer re-fetches,
    # reload = SIGHUP to the main process.
    assert rendered.index(f"  if {fetch}; then break; fi") < rendered.index("systemctl enable --now sumu-node.service")
    assert "systemctl enable --now sumu-tls-fetch.timer" in rendered
    assert "OnUnitActiveSec=60min" in rendered
    assert "ExecReload=/bin/kill -HUP $MAINPID" in rendered
    if source == "secretsmanager":
        assert "aws --region 'eu-west-1' secretsmanager get-secret-value" in rendered
        assert "ssm get-parameters" not in rendered
    else:
        assert "ssm get-parameters --with-decryption" in rendered
        assert "--names '/sumu/tls/cert' '/sumu/tls/key'" in rendered
        assert "secretsmanager" not in rendered


def _fetch_script(source, tls_dir: Path) -> str:
    rendered = render_template(TEMPLATE.read_text(), _template_values("node", source))
    body = rendered.split("cat > /usr/local/bin/sumu-tls-fetch <<'FETCH'\n", 1)[1].split("\nFETCH\n", 1)[0]
    # Run unprivileged in a temporary directory: no 'sumu' group here.
    body = body.replace("DIR=/etc/sumu/tls", f"DIR={tls_dir}")
    body = body.replace("-o root -g sumu ", "").replace("chown root:sumu", "true")
    assert f"DIR={tls_dir}" in body and "-g sumu" not in body
    return body


def _keypair(tmp: Path, name: str):
    key, cert = tmp / f"{name}.key", tmp / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}.example.com"],
                   check=True, capture_output=True)
    return cert.read_text(), key.read_text()


@pytest.mark.parametrize("source", ["secretsmanager", "ssm"])
def test_tls_fetch_installs_checks_and_rotates_atomically(tmp_path, source):
    """Run the rendered sumu-tls-fetch with fake aws and systemctl commands."""
    tls_dir = tmp_path / "tls"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    answer = tmp_path / "aws-answer.json"
    calls = tmp_path / "systemctl.calls"
    (bindir / "aws").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/aws.calls\ncat {answer}\n')
    (bindir / "systemctl").write_text(f'#!/bin/bash\necho "$@" >> {calls}\nexit 0\n')
    for f in bindir.iterdir():
        f.chmod(0o755)
    script = tmp_path / "sumu-tls-fetch"
    script.write_text(_fetch_script(source, tls_dir))
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}

    def answer_with(cert, key):
        if source == "secretsmanager":
            doc = {k: v for k, v in (("certificate", cert), ("private_key", key)) if v is not None}
            answer.write_text(json.dumps(doc))  # the CLI prints SecretString as is
        else:
            params = [{"Name": n, "Value": v} for n, v in (("/sumu/tls/cert", cert), ("/sumu/tls/key", key)) if v is not None]
            missing = [n for n, v in (("/sumu/tls/cert", cert), ("/sumu/tls/key", key)) if v is None]
            answer.write_text(json.dumps({"Parameters": params, "InvalidParameters": missing}))

    def fetch():
        return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)

    def current():
        return ((tls_dir / "current" / "fullchain.pem").read_text(), (tls_dir / "current" / "privkey.pem").read_text())

    def reloads():
        return calls.read_text().count("reload sumu-node.service") if calls.exists() else 0

    cert_a, key_a = _keypair(tmp_path, "a")
    cert_b, key_b = _keypair(tmp_path, "b")

    answer_with(cert_a, key_a)
    r = fetch()
    assert r.returncode == 0, r.stderr
    assert current() == (cert_a, key_a)
    assert (tls_dir / "current").is_symlink()
    assert oct((tls_dir / "current" / "privkey.pem").stat().st_mode & 0o777) == "0o640"
    assert reloads() == 1

    r = fetch()  # unchanged: nothing swapped, no reload
    assert r.returncode == 0, r.stderr
    assert reloads() == 1 and len(list(tls_dir.glob("gen-*"))) == 1

    answer_with(cert_b, key_a)  # a key that does not match the certificate
    r = fetch()
    assert r.returncode != 0 and "does not match" in r.stderr, r.stderr
    assert current() == (cert_a, key_a) and reloads() == 1

    answer_with(cert_b, None)  # half of the pair missing
    r = fetch()
    assert r.returncode != 0 and "could not read certificate and key" in r.stderr, r.stderr
    assert current() == (cert_a, key_a) and reloads() == 1

    answer_with("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", key_b)
    r = fetch()
    assert r.returncode != 0 and "refused" in r.stderr, r.stderr
    assert current() == (cert_a, key_a) and reloads() == 1

    answer_with(cert_b, key_b)  # rotation
    r = fetch()
    assert r.returncode == 0, r.stderr
    assert current() == (cert_b, key_b) and reloads() == 2
    assert "installed a new certificate" in r.stdout
    assert len(list(tls_dir.glob("gen-*"))) == 2, "the previous generation is kept, older ones dropped"
    assert not list(tls_dir.glob(".new.*")), "no temporary directory left behind"
