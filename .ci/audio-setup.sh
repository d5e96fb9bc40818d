#!/usr/bin/env bash
# System packages for the audio tests: PortAudio (what sounddevice loads) and a JACK server whose "dummy"
# driver gives a real-time audio path without a sound card (tests/client/conftest.py starts it), and flite
# and festival (with three Debian voices), the programs behind the flite and festival TTS engines (more
# synthesis families for SER training data).
# Installs with apt-get when run as root on Debian/Ubuntu; otherwise only says what is missing.
# Idempotent: returns at once when everything is already there.
set -euo pipefail

have_all() {
    command -v jackd >/dev/null && command -v jack_connect >/dev/null && command -v jack_lsp >/dev/null \
        && command -v flite >/dev/null && command -v text2wave >/dev/null \
        && [ -d /usr/share/festival/voices/english/kal_diphone ] \
        && [ -d /usr/share/festival/voices/english/ked_diphone ] \
        && [ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] \
        && ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2'
}

if have_all; then
    echo "audio-setup: jackd, flite, festival and libportaudio2 already installed"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "audio-setup: not root or no apt-get; install jackd2, flite, festival (with festvox-kallpc16k" \
        "festvox-kdlpc16k festvox-us-slt-hts) and libportaudio2 (macOS: brew install jack flite festival portaudio)" \
        "yourself, or the tests that need them are skipped"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
PACKAGES="jackd2 flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts libportaudio2"
# jackd2 asks whether to enable real-time scheduling for the audio group; the tests run without it.
echo "jackd2 jackd/tweak_rt_limits boolean false" | debconf-set-selections
if ! apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
fi
have_all || { echo "audio-setup: $PACKAGES installed but not all found" >&2; exit 1; }
echo "audio-setup: installed $PACKAGES"
