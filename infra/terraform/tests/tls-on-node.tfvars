# checkov's second pass (check.sh): TLS ends on the nodes, certificate from
# Secrets Manager with a customer managed key, plain listener on.
tls_termination           = "node"
node_tls_secret_arn       = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sumu/tls-AbCdEf"
node_tls_kms_key_arn      = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
enable_plain_tcp_listener = true
