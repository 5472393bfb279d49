#!/usr/bin/env bash
# Build an offline NLTK data folder with WordNet 3.0 for the METEOR caption metric.
#
#   bash tools/install-wordnet.sh [TARGET]      (default TARGET: <repo>/.nltk_data)
#
# nltk normally downloads WordNet at run time, which is impossible here. Debian ships the same
# WordNet 3.0 database (packages wordnet-base + wordnet-sense-index, in /usr/share/wordnet), but:
#   * nltk >= 3.9 refuses corpus paths outside its data folders, so the files are copied into
#     TARGET/corpora/wordnet/ (TARGET is what NLTK_DATA, or fmri_recon.metrics.captions, points at);
#   * nltk's reader also needs a `lexnames` file, which Debian ships only as the lexnames(5WN) man
#     page: its 45 rows "NN<TAB>name" plus the syntactic category taken from the name's prefix
#     (noun 1, verb 2, adj 3, adv 4) make the file.
# Idempotent: installs the Debian packages only when missing, rewrites the folder every time
# (cheap: about 35 MB of copies). Needs root (or sudo) only for apt. Exits non-zero on failure.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${1:-$REPO/.nltk_data}"
SRC=/usr/share/wordnet
# The database files nltk's WordNetCorpusReader opens (plus the sense index and counts it
# uses for lemma keys and frequencies).
FILES="data.noun data.verb data.adj data.adv index.noun index.verb index.adj index.adv
       noun.exc verb.exc adj.exc adv.exc index.sense cntlist.rev"

die() { echo "install-wordnet: $*" >&2; exit 1; }

have_files() {
    local f
    for f in $FILES; do [ -s "$SRC/$f" ] || return 1; done
}

if ! have_files; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq || die "apt-get update failed"
    $SUDO apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index >/dev/null \
        || die "apt-get install wordnet-base wordnet-sense-index failed"
    have_files || die "WordNet files still missing under $SRC after installing the packages"
fi

DEST="$TARGET/corpora/wordnet"
mkdir -p "$DEST"
for f in $FILES; do
    cp -f "$SRC/$f" "$DEST/$f"
done

# lexnames: from the man page when it is installed (minimal images often drop man pages), else
# from the same 45 names written out here; each row is "NN<TAB>name<TAB>category".
MAN=/usr/share/man/man5/lexnames.5WN.gz
NAMES=""
if [ -s "$MAN" ]; then
    NAMES="$(zcat "$MAN" | awk -F'\t' '$1 ~ /^[0-9][0-9]$/ { gsub(/ +$/, "", $2); print $2 }')"
fi
if [ "$(printf '%s\n' "$NAMES" | grep -c .)" -ne 45 ]; then
    NAMES="adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession
noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time
verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption
verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social
verb.stative verb.weather adj.ppl"
fi
printf '%s\n' $NAMES | awk '
    { split($1, p, "."); cat = (p[1] == "noun") ? 1 : (p[1] == "verb") ? 2 : (p[1] == "adj") ? 3 : (p[1] == "adv") ? 4 : 0
      if (cat == 0) { print "bad lexname " $1 > "/dev/stderr"; exit 1 }
      printf "%02d\t%s\t%d\n", NR - 1, $1, cat }' > "$DEST/lexnames.tmp" || die "could not build lexnames"
[ "$(wc -l < "$DEST/lexnames.tmp")" -eq 45 ] || die "lexnames has $(wc -l < "$DEST/lexnames.tmp") rows, expected 45"
mv -f "$DEST/lexnames.tmp" "$DEST/lexnames"

# The default folder lives inside the repository: make it ignore itself so that nothing of it
# is ever committed, whatever the repository's .gitignore says.
if [ "$TARGET" = "$REPO/.nltk_data" ] && [ ! -f "$TARGET/.gitignore" ]; then
    printf '*\n' > "$TARGET/.gitignore"
fi

echo "$TARGET"
