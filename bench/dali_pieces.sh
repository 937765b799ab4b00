#!/usr/bin/env bash
# DALI for a GPU machine without network (bench/gpu_check.sh's DALI sections), cut into pieces
# small enough for one transfer each. Run here, where pip can download; the GPU machine's
# interpreter is CPython 3.12 on x86-64 Linux with CUDA 13.
#
#   bash bench/dali_pieces.sh OUTDIR [MIB_PER_PIECE]      # default 57
#
# OUTDIR gets dali.tar.xz.part-aa, -ab, ... , SHA256SUMS and join.sh. On the GPU machine, with
# every piece copied into one folder:
#   bash join.sh FOLDER SITE && export PYTHONPATH=SITE:$PYTHONPATH
set -euo pipefail
out=${1:?usage: bench/dali_pieces.sh OUTDIR [MIB_PER_PIECE]}
mib=${2:-57}
py=${PYTHON:-python3}
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT

# DALI and what it needs that a CUDA PyTorch image lacks (numpy, packaging and six are there).
# Versions as nvidia-dali-cuda130 2.4.0 asks for them in its metadata (nvcomp exactly).
"$py" -m pip install --quiet --no-deps --only-binary=:all: --target "$site" \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "nvidia-dali-cuda130==${DALI_VERSION:-2.4.0}" "nvidia-nvimgcodec-cu13>=0.9,<0.10" \
  "nvidia-libnvcomp-cu13==5.3.0.16" nvidia-nvjpeg nvidia-nvjpeg2k-cu13 nvidia-nvtiff-cu13 \
  "astunparse<=1.6.3" "gast<=0.7.0" optree nvtx makefun "libcst~=1.8"
# The binding is shipped for several interpreters; only 3.12's is needed there.
find "$site" -name '*cpython-3*' ! -name '*cpython-312-*' -delete

mkdir -p "$out"
rm -f "$out"/dali.tar.xz.part-* "$out/SHA256SUMS"
tar -C "$site" -cf - . | xz -9 -T0 | split -b "${mib}M" - "$out/dali.tar.xz.part-"
(cd "$out" && sha256sum dali.tar.xz.part-* >SHA256SUMS)
cat >"$out/join.sh" <<'JOIN'
#!/usr/bin/env bash
# bash join.sh FOLDER SITE: check every piece in FOLDER, join them, unpack into SITE.
set -euo pipefail
folder=${1:?FOLDER}
site=${2:?SITE}
(cd "$folder" && sha256sum --quiet -c SHA256SUMS)
mkdir -p "$site"
cat "$folder"/dali.tar.xz.part-* | xz -d | tar -C "$site" -xf -
echo "DALI in $site: export PYTHONPATH=$site:\$PYTHONPATH"
JOIN
chmod +x "$out/join.sh"
ls -l "$out"
