#!/usr/bin/env bash
# Python-side checks of deploy/: the Kubernetes manifests against the Kubernetes 1.30 schemas
# (kubernetes-validate --strict, schemas shipped inside the wheel: no network after pip) and
# yamllint. Self-contained and idempotent; run from anywhere: bash .ci/deploy-checks.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
k8s_version="1.30.0"
kv_version="1.37.0"
yamllint_version="1.38.0"
venv="${DEPLOY_CHECKS_VENV:-$repo/target/deploy-checks-venv}"

# A private virtualenv keeps the tools off the system site and makes reruns cheap. Debian
# without python3-venv has no ensurepip: fall back to a user-site install there.
if [ -x "$venv/bin/python" ] || { python3 -c 'import ensurepip' 2>/dev/null && python3 -m venv "$venv"; }; then
  py="$venv/bin/python"
  bin="$venv/bin"
  pip_flags=()
else
  py="python3"
  bin="$(python3 -m site --user-base)/bin"
  pip_flags=(--user)
  if python3 -m pip install --help | grep -q -- --break-system-packages; then
    pip_flags+=(--break-system-packages)
  fi
fi
"$py" -m pip install --quiet --disable-pip-version-check "${pip_flags[@]}" \
  "kubernetes-validate==$kv_version" "yamllint==$yamllint_version"

# The schemas must be in the wheel, or a run would silently depend on the network.
schema_dir="$("$py" -c 'import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))')/kubernetes-json-schema/v${k8s_version}-local-strict"
if [ ! -d "$schema_dir" ]; then
  echo "deploy-checks: kubernetes-validate $kv_version has no bundled schemas for $k8s_version ($schema_dir)" >&2
  exit 1
fi

manifests=("$repo"/deploy/kubernetes/*.yaml)
echo "deploy-checks: kubernetes-validate --strict (Kubernetes $k8s_version) ${#manifests[@]} manifests"
# kubernetes-validate only warns (exit 0) about a kind it has no schema for: every manifest here
# is a built-in kind, so such a warning means it was not checked at all, which fails the run.
out="$("$bin/kubernetes-validate" --strict --kubernetes-version "$k8s_version" "${manifests[@]}" 2>&1)" || {
  echo "$out" >&2
  exit 1
}
echo "$out"
if grep -q "Couldn't find schema" <<<"$out"; then
  echo "deploy-checks: a manifest in deploy/kubernetes/ was not validated (no schema for its kind)" >&2
  exit 1
fi
# deploy/kubernetes/cert-manager/ holds custom resources (cert-manager's Certificate), whose
# schemas the wheel does not bundle: yamllint below checks them, and tests/deploy.rs their fields.

# The check must be able to fail: a manifest with an unknown field has to be refused.
bad="$repo/tests/fixtures/deploy-bad/kubernetes/bad.yaml"
if "$bin/kubernetes-validate" --strict --quiet --kubernetes-version "$k8s_version" "$bad" >/dev/null 2>&1; then
  echo "deploy-checks: kubernetes-validate accepted $bad, which has an unknown field" >&2
  exit 1
fi

echo "deploy-checks: yamllint deploy/kubernetes"
"$bin/yamllint" --strict -c "$repo/deploy/kubernetes/.yamllint" "$repo/deploy/kubernetes"

echo "deploy-checks: ok"
