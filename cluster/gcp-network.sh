#!/usr/bin/env bash
# Make the VPC cluster/gcp-gpu.yaml names: subnet "coalition-ray", SSH (22/tcp) from one CIDR
# only, all traffic inside the VPC (Ray's ports, Filestore/NFS).
#   cluster/gcp-network.sh <project-id> <your-cidr, e.g. 203.0.113.7/32> [region]
set -euo pipefail
project=${1:?usage: $0 <project-id> <cidr> [region]}
cidr=${2:?usage: $0 <project-id> <cidr> [region]}
region=${3:-us-central1}
range=10.42.0.0/20
gcloud compute networks create coalition-ray --project "$project" --subnet-mode custom
gcloud compute networks subnets create coalition-ray --project "$project" \
  --network coalition-ray --region "$region" --range "$range"
gcloud compute firewall-rules create coalition-ray-ssh --project "$project" \
  --network coalition-ray --allow tcp:22 --source-ranges "$cidr" --target-tags coalition-ray
gcloud compute firewall-rules create coalition-ray-internal --project "$project" \
  --network coalition-ray --allow tcp,udp,icmp --source-ranges "$range"
