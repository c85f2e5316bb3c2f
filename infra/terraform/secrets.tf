# API key for POST /api/notify. Nodes read it at boot from SSM Parameter
# Store (SecureString) and never see it in user data or the launch template.
# Bring your own parameter with api_key_ssm_parameter_name, or let the module
# generate one (its value is then in the Terraform state: keep state private).

resource "random_password" "api_key" {
  count   = var.api_key_ssm_parameter_name == null ? 1 : 0
  length  = 48
  special = false
}

resource "aws_ssm_parameter" "api_key" {
  count       = var.api_key_ssm_parameter_name == null ? 1 : 0
  name        = local.api_key_parameter_name
  description = "sumu API key for POST /api/notify (${local.prefix})"
  type        = "SecureString"
  key_id      = aws_kms_key.sumu.arn
  value       = random_password.api_key[0].result
  tags        = local.tags
}
