#!/usr/bin/env bash
# Run the node agent once on a machine with an NVIDIA GPU and print what it sees: the NVML
# inventory, one telemetry sample, and the active checks (bf16 GEMM TFLOP/s, HBM copy GB/s)
# next to the fleet catalog's peak for the model. Nothing is posted anywhere.
#
# Needs nothing beyond torch (a CUDA build) and nvidia-ml-py: it uses a Python that already has
# both (PYTHON=..., else the first of .venv/bin/python, python3 that has them), or makes a
# throwaway venv and pip-installs them there (network needed; CPU-only torch wheels will not
# do). The repository is used through PYTHONPATH=src, so none of neocloud's own dependencies
# are installed: the agent runs as `python -m neocloud.agent --once --print` (the same code as
# `neocloud agent --once --print`, without the CLI's Typer). Finishes in under 3 minutes.
#
# Exit status: 0 all checks pass, 1 a check warned or failed, 2 no GPU / no usable Python.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v nvidia-smi >/dev/null 2>&1 && [[ ! -e /dev/nvidiactl ]]; then
  echo "gpu_check.sh: no NVIDIA GPU here (no nvidia-smi, no /dev/nvidiactl); run it on a GPU node" >&2
  exit 2
fi

ready() {
  "$1" -c 'import sys, torch, pynvml; sys.exit(0 if torch.cuda.is_available() else 1)' \
    >/dev/null 2>&1
}

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && ready "$candidate"; then
      PY="$candidate"
      break
    fi
  done
fi
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
if [[ -z "$PY" ]]; then
  VENV="$SCRATCH/venv"
  echo "gpu_check.sh: installing torch and nvidia-ml-py into a throwaway venv ($VENV)" >&2
  python3 -m venv "$VENV"
  timeout 150 "$VENV/bin/pip" install --quiet torch nvidia-ml-py
  PY="$VENV/bin/python"
fi
if ! ready "$PY"; then
  echo "gpu_check.sh: $PY has no CUDA torch or no nvidia-ml-py (set PYTHON=...)" >&2
  exit 2
fi

REPORT="$SCRATCH/report.json"
started=$(date +%s)
PYTHONPATH=src timeout 170 "$PY" -m neocloud.agent --once --print >"$REPORT"
echo "agent ran in $(( $(date +%s) - started )) s with $("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')"

"$PY" - "$REPORT" <<'PYEOF'
import json
import sys

report = json.load(open(sys.argv[1]))
inv = report["inventory"]
print(f"driver {inv['driver_version']}, CUDA {inv['cuda_version']}, simulated {report['simulated']}")
if report.get("problem"):
    print(f"problem: {report['problem']}")
for gpu in inv["gpus"]:
    print(
        f"  gpu {gpu['index']}: {gpu['name']}, {gpu['memory_total_mib']} MiB, bus {gpu['pci_bus_id']},"
        f" NVLink active {gpu['nvlink_active']}, serial {gpu['serial']}, {gpu['uuid']}"
    )
for t in report["telemetry"]:
    print(
        f"  gpu {t['index']}: util {t['utilization_pct']:.0f} %, {t['memory_used_mib']} MiB used,"
        f" {t['temperature_c']:.0f} C, {t['power_w']:.0f} W, SM {t['sm_clock_mhz']} MHz,"
        f" ECC vol corr/uncorr {t['ecc_correctable']}/{t['ecc_uncorrectable']},"
        f" remap failed {t['remap_failed']}, throttle {t['throttle'] or '-'}, xid {t['xid'] or '-'}"
    )
for line in report["unreadable"]:
    print(f"  unreadable: {line}")
names = {gpu["index"]: gpu["name"] for gpu in inv["gpus"]}
print("active checks (pass >= 0.6 of peak, warn >= 0.3, fail below):")
print(f"  {'check':<22} {'measured':>12} {'peak':>10}  {'ratio':>5}  status")
worst = "pass"
for check in report["checks"]:
    value, unit = check["value"], check["unit"] or ""
    index = int(check["name"][3:].split(".")[0]) if check["name"].startswith("gpu") else None
    peak = report["peaks"].get(names.get(index, ""))
    key = "bf16_tflops" if unit == "TFLOP/s" else "hbm_gbps"
    peak_value = peak[key] if peak else None
    ratio = f"{value / peak_value:.2f}" if value is not None and peak_value else "-"
    shown = f"{value:.1f} {unit}" if value is not None else "-"
    print(f"  {check['name']:<22} {shown:>12} {peak_value or '-':>10}  {ratio:>5}  {check['status']}")
    if check["status"] != "pass":
        print(f"      {check['message']}")
        worst = "fail" if check["status"] == "fail" else ("warn" if worst == "pass" else worst)
sys.exit(0 if worst == "pass" else 1)
PYEOF
