# The build image `cross` uses for Tally (see ../cross.toml): Debian bookworm, the target's
# C toolchain and GStreamer 1.22 development packages, and pkg-config pointed at them. Only
# the target's -dev packages are installed, so multiarch has no host copy to conflict with.
FROM debian:bookworm
ARG DEB_ARCH=arm64
ARG GNU_TRIPLE=aarch64-linux-gnu
RUN dpkg --add-architecture "$DEB_ARCH" \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates pkg-config "gcc-$GNU_TRIPLE" "libc6-dev-$DEB_ARCH-cross" \
      "libgstreamer1.0-dev:$DEB_ARCH" "libgstreamer-plugins-base1.0-dev:$DEB_ARCH" \
 && rm -rf /var/lib/apt/lists/*
ENV PKG_CONFIG_ALLOW_CROSS=1 \
    PKG_CONFIG_LIBDIR=/usr/lib/${GNU_TRIPLE}/pkgconfig:/usr/share/pkgconfig \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
