#!/usr/bin/env bash
# Media benchmark (not a test): Tally's whole processing of a file (metadata, the
# photosensitivity pass over every frame, two JPEG thumbnails) against one pure decode of
# the same file (the floor: `decodebin ! fakesink`) and against the usual shell-out
# approach (`ffprobe` for metadata + `ffmpeg` for one thumbnail, no flash analysis).
# Writes the table to BENCHMARKS.md. Needs: release build, gst-launch-1.0, ffmpeg, hyperfine.
#   bench/media.sh [seconds-of-video]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
command -v hyperfine >/dev/null && command -v ffmpeg >/dev/null || { echo "needs hyperfine and ffmpeg (apt-get install hyperfine ffmpeg)"; exit 1; }
cargo build --release --locked -q
tally=target/release/tally
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

rows=()
for size in 1280x720 1920x1080; do
  w=${size%x*}; h=${size#*x}; file="$work/${h}p.mp4"
  gst-launch-1.0 -q videotestsrc pattern=ball num-buffers=$((seconds * 30)) \
    ! "video/x-raw,format=I420,width=$w,height=$h,framerate=30/1" ! openh264enc bitrate=6000000 \
    ! h264parse ! mp4mux ! filesink location="$file"
  hyperfine --warmup 1 --runs 5 --export-json "$work/${h}.json" \
    -n tally "$tally process $file --out $work/thumbs" \
    -n decode "gst-launch-1.0 -q filesrc location=$file ! decodebin ! fakesink" \
    -n ffmpeg "ffprobe -v quiet -print_format json -show_format -show_streams $file > /dev/null && ffmpeg -v quiet -y -ss 1 -i $file -frames:v 1 -vf scale=320:-1 $work/thumb.jpg" >&2
  row=$(python3 - "$work/${h}.json" "${h}p" "$seconds" <<'PY'
import json, sys
runs = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
t, d, f = (runs[k]["median"] for k in ("tally", "decode", "ffmpeg"))
print(f"| {sys.argv[2]} ({sys.argv[3]} s, H.264) | {t:.2f} s | {d:.2f} s | {f:.2f} s | {t/d:.2f}x | {t/f:.2f}x |")
PY
)
  rows+=("$row")
done

machine="$(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
{
  echo "# Benchmarks"
  echo
  echo "## Media processing"
  echo
  echo "Command: \`bench/media.sh $seconds\` (hyperfine, 5 runs after 1 warm-up, medians), on $machine, $(date -u +%Y-%m-%d)."
  echo "Software decoding (avdec_h264); GStreamer $(gst-launch-1.0 --version | sed -n 2p | awk '{print $2}')."
  echo
  echo "| video | tally process | pure decode | ffprobe + ffmpeg thumbnail | tally / decode | tally / ffmpeg |"
  echo "| --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "\`tally process\` does everything a job does: Discoverer metadata, one decode pass over every"
  echo "frame scaled to 160 px for the pse-flash-v1 analysis and the thumbnail choice, then a seek and"
  echo "two JPEGs. The ffmpeg column decodes about one frame and analyses nothing, so it is the cost"
  echo "of metadata plus a thumbnail only; the decode column is the floor for any per-frame analysis."
} > BENCHMARKS.md
cat BENCHMARKS.md
