#!/usr/bin/env bash
# Make the security group cluster/gpu.yaml names: SSH (22/tcp) from one CIDR only, and all
# traffic between members (Ray's ports, EFS/NFS). Prints the group id for SecurityGroupIds.
#   cluster/aws-security-group.sh <your-cidr, e.g. 203.0.113.7/32> [vpc-id] [region]
set -euo pipefail
cidr=${1:?usage: $0 <cidr> [vpc-id] [region]}
region=${3:-us-west-2}
vpc=${2:-$(aws ec2 describe-vpcs --region "$region" --filters Name=isDefault,Values=true \
  --query 'Vpcs[0].VpcId' --output text)}
sg=$(aws ec2 create-security-group --region "$region" --vpc-id "$vpc" --group-name coalition-ray \
  --description "coalition Ray cluster: SSH from $cidr, all traffic inside" \
  --query GroupId --output text)
aws ec2 authorize-security-group-ingress --region "$region" --group-id "$sg" \
  --protocol tcp --port 22 --cidr "$cidr" >/dev/null
aws ec2 authorize-security-group-ingress --region "$region" --group-id "$sg" \
  --protocol all --source-group "$sg" >/dev/null
echo "$sg"
