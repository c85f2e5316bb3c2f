# ---------------------------------------------------------------------------
# Naming
# ---------------------------------------------------------------------------

variable "name_prefix" {
  type        = string
  default     = "Sumu"
  description = "Prefix of every resource name (tables <prefix>Connections/<prefix>Cluster, topics, queues, per-node inbox queues <prefix>Inbox-<node_id>). Passed to the nodes as SUMU_NAME_PREFIX."

  validation {
    # SQS queue names allow [A-Za-z0-9_-] up to 80 chars; the longest name the
    # nodes derive is "<prefix>Inbox-<node_id>-r<n>" (a rejoin), so keep the prefix short.
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_-]{0,31}$", var.name_prefix))
    error_message = "name_prefix must start with a letter and contain only letters, digits, '_' or '-' (1-32 characters)."
  }
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags added to every resource that supports tags."
}

# ---------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------

variable "vpc_id" {
  type        = string
  description = "VPC in which the load balancer and the nodes run."

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123abcd."
  }
}

variable "public_subnet_ids" {
  type        = list(string)
  description = "Subnets for the Network Load Balancer (public subnets unless internal_nlb = true). One per availability zone."

  validation {
    condition     = length(var.public_subnet_ids) >= 1 && alltrue([for s in var.public_subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "public_subnet_ids must hold at least one id of the form subnet-0123abcd."
  }
}

variable "private_subnet_ids" {
  type        = list(string)
  description = "Subnets for the nodes (private subnets with a NAT gateway or VPC endpoints for DynamoDB, SNS, SQS, SSM, CloudWatch, and a route to the JWKS URI)."

  validation {
    condition     = length(var.private_subnet_ids) >= 1 && alltrue([for s in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "private_subnet_ids must hold at least one id of the form subnet-0123abcd."
  }
}

variable "internal_nlb" {
  type        = bool
  default     = false
  description = "Make the Network Load Balancer internal (reachable only inside the VPC)."
}

variable "allowed_client_cidrs" {
  type        = list(string)
  default     = ["0.0.0.0/0"]
  description = "IPv4 CIDR blocks allowed to open WebSocket connections through the load balancer."

  validation {
    condition     = length(var.allowed_client_cidrs) >= 1 && alltrue([for c in var.allowed_client_cidrs : can(cidrhost(c, 0))])
    error_message = "allowed_client_cidrs must be a non-empty list of valid CIDR blocks."
  }
}

# ---------------------------------------------------------------------------
# Load balancer and DNS
# ---------------------------------------------------------------------------

variable "tls_termination" {
  type        = string
  default     = "nlb"
  description = "Where TLS (wss://) ends. \"nlb\": a TLS listener with the ACM certificate certificate_arn; the nodes speak plain TCP. \"node\": a TCP listener passes the bytes through and sumu-node terminates TLS itself (--tls-listen on node_tls_port) with a certificate and key it fetches from Secrets Manager (node_tls_secret_arn) or SSM Parameter Store (node_tls_ssm_parameter_names) at boot and every node_tls_refresh_minutes. See README \"Where TLS ends\" for the cost trade-off."

  validation {
    condition     = contains(["nlb", "node"], var.tls_termination)
    error_message = "tls_termination must be \"nlb\" or \"node\"."
  }
}

variable "certificate_arn" {
  type        = string
  default     = null
  description = "ARN of the ACM certificate for domain_name, used by the NLB's TLS listener (wss://). Required when tls_termination = \"nlb\", unused when \"node\"."

  validation {
    condition     = var.certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.certificate_arn))
    error_message = "certificate_arn must be null or an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)."
  }
}

variable "tls_port" {
  type        = number
  default     = 443
  description = "Port of the TLS listener (wss)."

  validation {
    condition     = var.tls_port >= 1 && var.tls_port <= 65535 && floor(var.tls_port) == var.tls_port
    error_message = "tls_port must be an integer between 1 and 65535."
  }
}

variable "ssl_policy" {
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  description = "TLS security policy of the TLS listener (TLS 1.2 minimum)."

  validation {
    condition     = can(regex("^ELBSecurityPolicy-(TLS13-1-[23]|TLS-1-2|FS-1-2)", var.ssl_policy))
    error_message = "ssl_policy must be an ELB security policy that allows only TLS 1.2 or newer."
  }
}

variable "enable_plain_tcp_listener" {
  type        = bool
  default     = false
  description = "Also open a plain TCP listener (ws://, no TLS) on plain_tcp_port. Use only behind another TLS terminator or for tests."
}

variable "plain_tcp_port" {
  type        = number
  default     = 80
  description = "Port of the optional plain TCP listener."

  validation {
    condition     = var.plain_tcp_port >= 1 && var.plain_tcp_port <= 65535 && floor(var.plain_tcp_port) == var.plain_tcp_port
    error_message = "plain_tcp_port must be an integer between 1 and 65535."
  }
}

variable "nlb_access_logs_bucket" {
  type        = string
  default     = null
  description = "S3 bucket for NLB access logs (TLS listener connections). null disables access logs."

  validation {
    condition     = var.nlb_access_logs_bucket == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.nlb_access_logs_bucket))
    error_message = "nlb_access_logs_bucket must be null or a valid S3 bucket name."
  }
}

variable "route53_zone_id" {
  type        = string
  description = "Route 53 hosted zone in which the record domain_name is created."

  validation {
    condition     = can(regex("^Z[A-Z0-9]+$", var.route53_zone_id))
    error_message = "route53_zone_id must be a hosted zone id such as Z0123456789ABCDEFGHIJ."
  }
}

variable "domain_name" {
  type        = string
  description = "Fully qualified name clients connect to (wss://<domain_name>/push); must be covered by certificate_arn."

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain_name))
    error_message = "domain_name must be a lower-case fully qualified domain name such as ws.example.com."
  }
}

# ---------------------------------------------------------------------------
# Fleet
# ---------------------------------------------------------------------------

variable "instance_type" {
  type        = string
  default     = "c6i.large"
  description = "EC2 instance type of the nodes; its architecture must match `architecture` and the sumu-node binary."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like c6i.large."
  }
}

variable "architecture" {
  type        = string
  default     = "x86_64"
  description = "CPU architecture of the default Amazon Linux 2023 AMI (ignored when ami_id is set)."

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "ami_id" {
  type        = string
  default     = null
  description = "AMI of the nodes. null = latest Amazon Linux 2023. The AMI must provide the aws CLI and systemd; sumu-node comes from node_binary_s3_uri or must be baked in at /usr/local/bin/sumu-node."

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]+$", var.ami_id))
    error_message = "ami_id must be null or look like ami-0123abcd."
  }
}

variable "node_binary_s3_uri" {
  type        = string
  default     = null
  description = "s3://bucket/key of the sumu-node binary, downloaded at boot to /usr/local/bin/sumu-node. null = the AMI already has it."

  validation {
    condition     = var.node_binary_s3_uri == null || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$", var.node_binary_s3_uri))
    error_message = "node_binary_s3_uri must be null or of the form s3://bucket/key."
  }
}

variable "root_volume_size_gb" {
  type        = number
  default     = 20
  description = "Size of the nodes' encrypted gp3 root volume."

  validation {
    condition     = var.root_volume_size_gb >= 8 && var.root_volume_size_gb <= 1024
    error_message = "root_volume_size_gb must be between 8 and 1024."
  }
}

variable "min_size" {
  type        = number
  default     = 2
  description = "Minimum number of nodes."

  validation {
    condition     = var.min_size >= 1 && floor(var.min_size) == var.min_size
    error_message = "min_size must be an integer >= 1."
  }
}

variable "max_size" {
  type        = number
  default     = 6
  description = "Maximum number of nodes (must be >= min_size)."

  validation {
    condition     = var.max_size >= 1 && var.max_size <= 1000 && floor(var.max_size) == var.max_size
    error_message = "max_size must be an integer between 1 and 1000."
  }
}

variable "desired_capacity" {
  type        = number
  default     = null
  description = "Initial number of nodes (between min_size and max_size). null = min_size."

  validation {
    condition     = var.desired_capacity == null || try(var.desired_capacity >= 1 && floor(var.desired_capacity) == var.desired_capacity, false)
    error_message = "desired_capacity must be null or an integer >= 1."
  }
}

variable "target_cpu_utilization" {
  type        = number
  default     = 60
  description = "Target average CPU utilisation (%) of the target-tracking scaling policy. null disables scaling by CPU."

  validation {
    condition     = var.target_cpu_utilization == null || try(var.target_cpu_utilization > 0 && var.target_cpu_utilization <= 100, false)
    error_message = "target_cpu_utilization must be null or a percentage in (0, 100]."
  }
}

variable "target_sockets_per_node" {
  type        = number
  default     = 40000
  description = "Target average open sockets per node of the sockets target-tracking policy (the nodes' Sockets metric). Keep it under what one instance holds (README: sizing) and, if the NLB's client IP preservation is ever turned off, under its ~55,000 connections per target. null disables scaling by sockets."

  validation {
    condition     = var.target_sockets_per_node == null || try(var.target_sockets_per_node >= 100 && var.target_sockets_per_node <= 1000000 && floor(var.target_sockets_per_node) == var.target_sockets_per_node, false)
    error_message = "target_sockets_per_node must be null or a whole number between 100 and 1000000."
  }
}

variable "node_port" {
  type        = number
  default     = 8080
  description = "Port sumu-node listens on (SUMU_LISTEN=0.0.0.0:<node_port>); the target group and health check use it."

  validation {
    condition     = var.node_port >= 1024 && var.node_port <= 65535 && floor(var.node_port) == var.node_port
    error_message = "node_port must be an integer between 1024 and 65535."
  }
}

variable "drain_seconds" {
  type        = number
  default     = 60
  description = "How long a node drains on SIGTERM (SUMU_DRAIN_SECS). The NLB deregistration delay and the ASG termination lifecycle hook are derived from it."

  validation {
    condition     = var.drain_seconds >= 1 && var.drain_seconds <= 3600 && floor(var.drain_seconds) == var.drain_seconds
    error_message = "drain_seconds must be an integer between 1 and 3600 (the NLB deregistration delay maximum)."
  }
}

variable "recovery_window_seconds" {
  type        = number
  default     = 0
  description = "Recovery window (SUMU_RECOVERY_WINDOW_SECS): recover=1 sockets get what they missed within it, exactly once. 0 = off. On, it costs DynamoDB writes per routed request: 3 for a unicast or broadcast, 2n+1 for a multicast to n users (README, Recovery window). The history table exists either way."

  validation {
    condition     = var.recovery_window_seconds >= 0 && var.recovery_window_seconds <= 604800 && floor(var.recovery_window_seconds) == var.recovery_window_seconds
    error_message = "recovery_window_seconds must be an integer between 0 (off) and 604800 (7 days)."
  }
}

variable "connections_capacity" {
  type        = string
  default     = "on-demand"
  description = "Capacity mode of the connections table and its by_node index: \"on-demand\" (pay per request) or \"provisioned\" (read and write capacity auto scaled between connections_min_capacity and connections_max_capacity to connections_target_utilization). Provisioned is cheaper for a steady fleet of long-lived sockets, whose reconnects write rows at a steady rate (README: Sizing and cost); a burst above what is provisioned (every socket of the fleet reconnecting at once) is throttled until auto scaling catches up, and those connects are refused with 503 register_failed, which clients retry."

  validation {
    condition     = contains(["on-demand", "provisioned"], var.connections_capacity)
    error_message = "connections_capacity must be \"on-demand\" or \"provisioned\"."
  }
}

variable "connections_min_capacity" {
  type        = number
  default     = 25
  description = "With connections_capacity = \"provisioned\": the fewest read and write capacity units auto scaling leaves on the connections table and on its by_node index (each)."

  validation {
    condition     = var.connections_min_capacity >= 1 && var.connections_min_capacity <= 40000 && floor(var.connections_min_capacity) == var.connections_min_capacity
    error_message = "connections_min_capacity must be an integer between 1 and 40000."
  }
}

variable "connections_max_capacity" {
  type        = number
  default     = 10000
  description = "With connections_capacity = \"provisioned\": the most read and write capacity units auto scaling may set on the connections table and on its by_node index (each). Must be at least connections_min_capacity."

  validation {
    condition     = var.connections_max_capacity >= 1 && var.connections_max_capacity <= 40000 && floor(var.connections_max_capacity) == var.connections_max_capacity
    error_message = "connections_max_capacity must be an integer between 1 and 40000."
  }
}

variable "connections_target_utilization" {
  type        = number
  default     = 70
  description = "With connections_capacity = \"provisioned\": the percentage of provisioned capacity auto scaling keeps in use (target tracking on DynamoDB's consumed/provisioned ratio)."

  validation {
    condition     = var.connections_target_utilization >= 20 && var.connections_target_utilization <= 90
    error_message = "connections_target_utilization must be between 20 and 90 (percent)."
  }
}

variable "enable_ssm_session_manager" {
  type        = bool
  default     = true
  description = "Attach AmazonSSMManagedInstanceCore to the node role so operators reach nodes with Session Manager (no SSH, no key pair)."
}

variable "extra_environment" {
  type        = map(string)
  default     = {}
  description = "Additional SUMU_* environment variables for the nodes (e.g. SUMU_ALLOWED_ORIGINS). Do not put secrets here: they end up in user data."

  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : can(regex("^SUMU_[A-Z0-9_]+$", k)) && k != "SUMU_API_KEY"])
    error_message = "extra_environment keys must match ^SUMU_[A-Z0-9_]+$ and must not be SUMU_API_KEY."
  }
}

# ---------------------------------------------------------------------------
# TLS on the nodes (tls_termination = "node")
# ---------------------------------------------------------------------------

variable "node_tls_port" {
  type        = number
  default     = 8443
  description = "Port of sumu-node's TLS listener (--tls-listen 0.0.0.0:<node_tls_port>) when tls_termination = \"node\". The plain listener on node_port stays open for the NLB's /readyz health checks."

  validation {
    condition     = var.node_tls_port >= 1024 && var.node_tls_port <= 65535 && floor(var.node_tls_port) == var.node_tls_port
    error_message = "node_tls_port must be an integer between 1024 and 65535."
  }
}

variable "node_tls_secret_arn" {
  type        = string
  default     = null
  description = "Secrets Manager secret (full ARN, with its random suffix) whose SecretString is JSON {\"certificate\": \"<PEM full chain>\", \"private_key\": \"<PEM key>\"}. Used when tls_termination = \"node\"; set this or node_tls_ssm_parameter_names, not both."

  validation {
    condition     = var.node_tls_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$", var.node_tls_secret_arn))
    error_message = "node_tls_secret_arn must be null or a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>-<suffix>)."
  }
}

variable "node_tls_ssm_parameter_names" {
  type = object({
    certificate = string
    private_key = string
  })
  default     = null
  description = "Two SSM parameters (fully qualified names starting with '/'): certificate = the PEM full chain (String or SecureString; advanced tier if over 4 KB), private_key = the PEM key (SecureString). Used when tls_termination = \"node\"; set this or node_tls_secret_arn, not both."

  validation {
    condition     = var.node_tls_ssm_parameter_names == null || try(alltrue([for n in [var.node_tls_ssm_parameter_names.certificate, var.node_tls_ssm_parameter_names.private_key] : can(regex("^/[A-Za-z0-9_.\\-/]+$", n))]) && var.node_tls_ssm_parameter_names.certificate != var.node_tls_ssm_parameter_names.private_key, false)
    error_message = "node_tls_ssm_parameter_names must be null or two different fully qualified SSM parameter names starting with '/'."
  }
}

variable "node_tls_kms_key_arn" {
  type        = string
  default     = null
  description = "Customer managed KMS key that encrypts node_tls_secret_arn or the private_key parameter (null = the AWS managed key aws/secretsmanager or aws/ssm). The node role may use it only through that service (kms:ViaService)."

  validation {
    condition     = var.node_tls_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.node_tls_kms_key_arn))
    error_message = "node_tls_kms_key_arn must be null or a KMS key ARN."
  }
}

variable "node_tls_refresh_minutes" {
  type        = number
  default     = 60
  description = "How often each node re-fetches its certificate and key (systemd timer, with up to 5 minutes of random delay). A changed, valid pair is swapped in atomically and sumu-node reloads it on SIGHUP without dropping open sockets; an invalid pair is refused and the old one stays."

  validation {
    condition     = var.node_tls_refresh_minutes >= 5 && var.node_tls_refresh_minutes <= 1440 && floor(var.node_tls_refresh_minutes) == var.node_tls_refresh_minutes
    error_message = "node_tls_refresh_minutes must be an integer between 5 and 1440."
  }
}

# ---------------------------------------------------------------------------
# Node behaviour: authentication, presence
# ---------------------------------------------------------------------------

# Named as in SUMU's Terraform module, so that SUMU users keep their values.
variable "issuer_jwks_uri" {
  type        = string
  description = "JWKS URI of the identity provider that signs client JWTs (SUMU_JWKS_URI)."

  validation {
    condition     = can(regex("^https://[^\\s]+$", var.issuer_jwks_uri))
    error_message = "issuer_jwks_uri must be an https:// URL."
  }
}

variable "authorized_audiences" {
  type        = list(string)
  default     = []
  description = "Accepted JWT audiences (app clients), passed comma separated as SUMU_JWT_AUDIENCES. Empty = any audience, as in SUMU; set it in production."

  validation {
    condition     = alltrue([for a in var.authorized_audiences : length(a) > 0 && !can(regex(",", a))])
    error_message = "authorized_audiences must hold non-empty audiences without commas."
  }
}

variable "jwt_issuer" {
  type        = string
  default     = ""
  description = "Expected JWT issuer (SUMU_JWT_ISSUER); empty = not checked."
}

variable "verify_token_expiration" {
  type        = bool
  default     = true
  description = "Reject expired JWTs (SUMU_VERIFY_TOKEN_EXPIRATION)."
}

variable "presence_source" {
  type        = string
  default     = "topic"
  description = "Where presence events go: topic (messages topic), queue (messages queue) or none (SUMU_PRESENCE_SOURCE)."

  validation {
    condition     = contains(["topic", "queue", "none"], var.presence_source)
    error_message = "presence_source must be one of topic, queue, none."
  }
}

variable "api_key_ssm_parameter_name" {
  type        = string
  default     = null
  description = "Name of an existing SSM SecureString parameter holding the API key for POST /api/notify (SUMU_API_KEY). null = this module creates /<name_prefix>/api-key with a random value, encrypted with the module's KMS key."

  validation {
    condition     = var.api_key_ssm_parameter_name == null || can(regex("^/[A-Za-z0-9_.\\-/]+$", var.api_key_ssm_parameter_name))
    error_message = "api_key_ssm_parameter_name must be null or a fully qualified SSM parameter name starting with '/'."
  }
}

variable "api_key_kms_key_arn" {
  type        = string
  default     = null
  description = "Customer managed KMS key that encrypts an existing api_key_ssm_parameter_name (null = the aws/ssm key or the module's key)."

  validation {
    condition     = var.api_key_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.api_key_kms_key_arn))
    error_message = "api_key_kms_key_arn must be null or a KMS key ARN."
  }
}

# ---------------------------------------------------------------------------
# Data stores and queues
# ---------------------------------------------------------------------------

variable "deletion_protection" {
  type        = bool
  default     = true
  description = "Deletion protection on the DynamoDB tables and the load balancer."
}

variable "kms_key_deletion_window_days" {
  type        = number
  default     = 30
  description = "Waiting period before the module's KMS key is deleted after destroy."

  validation {
    condition     = var.kms_key_deletion_window_days >= 7 && var.kms_key_deletion_window_days <= 30
    error_message = "kms_key_deletion_window_days must be between 7 and 30."
  }
}

variable "max_receive_count" {
  type        = number
  default     = 5
  description = "Receives after which a message of the messages or notifications queue moves to its DLQ (redrive maxReceiveCount)."

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000 && floor(var.max_receive_count) == var.max_receive_count
    error_message = "max_receive_count must be an integer between 1 and 1000."
  }
}

variable "queue_visibility_timeout_seconds" {
  type        = number
  default     = 30
  description = "Visibility timeout of the messages and notifications queues."

  validation {
    condition     = var.queue_visibility_timeout_seconds >= 0 && var.queue_visibility_timeout_seconds <= 43200
    error_message = "queue_visibility_timeout_seconds must be between 0 and 43200."
  }
}

variable "queue_message_retention_seconds" {
  type        = number
  default     = 345600
  description = "Retention of the messages and notifications queues (default 4 days); the DLQs keep messages 14 days."

  validation {
    condition     = var.queue_message_retention_seconds >= 60 && var.queue_message_retention_seconds <= 1209600
    error_message = "queue_message_retention_seconds must be between 60 and 1209600."
  }
}

# ---------------------------------------------------------------------------
# Monitoring
# ---------------------------------------------------------------------------

variable "alarm_actions" {
  type        = list(string)
  default     = []
  description = "ARNs (e.g. an SNS topic) notified when an alarm fires or recovers."

  validation {
    condition     = alltrue([for a in var.alarm_actions : can(regex("^arn:aws[a-z-]*:", a))])
    error_message = "alarm_actions must be ARNs."
  }
}

variable "dlq_alarm_threshold" {
  type        = number
  default     = 0
  description = "The DLQ alarm fires when a DLQ holds more than this many visible messages."

  validation {
    condition     = var.dlq_alarm_threshold >= 0
    error_message = "dlq_alarm_threshold must be >= 0."
  }
}

variable "metrics_namespace" {
  type        = string
  default     = "Sumu"
  description = "CloudWatch namespace nodes publish custom metrics to (the only namespace they may write). Every node publishes Sockets there (the sockets scaling policy's metric); the presence leader publishes PresenceStreamIteratorAge."

  validation {
    condition     = can(regex("^[A-Za-z0-9_./#:-]{1,255}$", var.metrics_namespace)) && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be 1-255 characters of [A-Za-z0-9_./#:-] and must not start with AWS/."
  }
}

variable "stream_lag_alarm_threshold_seconds" {
  type        = number
  default     = 60
  description = "The stream lag alarm fires when the presence leader's PresenceStreamIteratorAge exceeds this many seconds."

  validation {
    condition     = var.stream_lag_alarm_threshold_seconds >= 1 && var.stream_lag_alarm_threshold_seconds <= 86400
    error_message = "stream_lag_alarm_threshold_seconds must be between 1 and 86400 (stream records live 24 h)."
  }
}

variable "stream_lag_treat_missing_data" {
  type        = string
  default     = "breaching"
  description = "How the stream lag alarm treats missing data. breaching (default): no data means no leader is reading the stream, which is itself an outage of presence."

  validation {
    condition     = contains(["breaching", "notBreaching", "ignore", "missing"], var.stream_lag_treat_missing_data)
    error_message = "stream_lag_treat_missing_data must be breaching, notBreaching, ignore or missing."
  }
}
