# Sourced by kernel-profile.sh and graph-profile.sh: a case written
# BATCHxSEQ, or BATCHxSEQv for lengths uniform in [SEQ/8, SEQ], as the
# arguments of dist/bench/gpu/kernel-profile.js.
#   profile_case_args 32x128v   ->   --batch 32 --seq 128 --varlen
profile_case_args() {
  local spec=${1%v}
  echo "--batch ${spec%x*} --seq ${spec#*x}$([ "$spec" != "$1" ] && echo ' --varlen')"
}
