#!/bin/sh
# node.sh VERB NODE BY [ARGS...]: what the kubernetes pack's actions do to a
# Kubernetes node, with the kubectl on the drone's host, and the record of
# it in the node's annotation ultron8.io/remediation:
#
#   {"cordoned":true,"taints":["key=value:NoSchedule"],"by":"...","at":"..."}
#
# The record is what makes undoing safe: `uncordon` and `undo` uncordon
# only a node Ultron8 cordoned, `untaint` and `undo` remove only taints
# Ultron8 added. A node someone else had cordoned is recorded with
# "cordoned":false and stays cordoned.
#
#   cordon | uncordon | undo | status
#   drain     TIMEOUT_SECONDS IGNORE_DAEMONSETS DELETE_EMPTYDIR_DATA
#   taint     KEY VALUE EFFECT
#   untaint   KEY EFFECT             (empty: every taint Ultron8 added)
#   remediate CORDON DRAIN TAINT TIMEOUT_SECONDS IGNORE_DAEMONSETS DELETE_EMPTYDIR_DATA KEY VALUE EFFECT
#
# NODE empty: $NODE_NAME (the DaemonSet in deploy/kubernetes sets it from
# spec.nodeName), else this host's name. Every value arrives as its own
# argument (a script action's args are an argv, no shell parses them) and is
# checked here before kubectl sees it. Exit 2: a bad argument, nothing
# changed; kubectl's own exit status and stderr when kubectl fails.
#
# POSIX sh, kubectl and sed/grep/tr only: no jq, no python. The record's
# JSON is written by this script alone, from values checked against
# Kubernetes' own syntax (which admits no quote, comma or bracket), so it
# can be read back with sed.
set -eu
set -f

ANNOTATION=ultron8.io/remediation
ANNOTATION_PATH='{.metadata.annotations.ultron8\.io/remediation}'
NL='
'

die() {
    echo "$*" >&2
    exit 2
}

# matches VALUE ERE: VALUE is one line that ERE matches whole.
matches() {
    case $1 in *"$NL"*) return 1 ;; esac
    printf '%s\n' "$1" | grep -Eqx -- "$2"
}

if ! command -v kubectl >/dev/null 2>&1; then
    echo "kubectl is not on the drone's PATH ($PATH): the kubernetes pack runs kubectl on the drone's host" >&2
    exit 127
fi

[ $# -ge 3 ] || die "usage: node.sh VERB NODE BY [ARGS...]"
verb=$1
node=$2
by=$3
shift 3

if [ -z "$node" ]; then
    node=${NODE_NAME:-$(uname -n)}
fi
if [ ${#node} -gt 253 ] || ! matches "$node" '[a-z0-9]([-a-z0-9.]*[a-z0-9])?'; then
    die "node: \"$node\" is not a Kubernetes node name (lower-case letters, digits, '-' and '.')"
fi
matches "$by" '[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}' ||
    die "by: \"$by\" must be letters, digits and . _ : @ / - (at most 128), e.g. rule:kubernetes.remediate_failing_node"

check_taint() { # KEY VALUE EFFECT
    matches "$1" '([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?' ||
        die "key: \"$1\" is not a taint key (an optional DNS prefix and /, then at most 63 letters, digits, '-', '_', '.')"
    matches "$2" '([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?' ||
        die "value: \"$2\" is not a taint value (at most 63 letters, digits, '-', '_', '.')"
    check_effect "$3"
}

check_effect() {
    case $1 in
        NoSchedule | PreferNoSchedule | NoExecute) ;;
        *) die "effect: \"$1\" is not NoSchedule, PreferNoSchedule or NoExecute" ;;
    esac
}

check_bool() { # NAME VALUE
    case $2 in true | false) ;; *) die "$1: \"$2\" is not true or false" ;; esac
}

check_timeout() {
    matches "$1" '[0-9]{1,4}' && [ "$1" -ge 1 ] && [ "$1" -le 1500 ] ||
        die "timeout: \"$1\" must be a number of seconds from 1 to 1500 (the action's own timeout is 30m)"
}

# A taint as kubectl writes it (key=value:effect, key:effect without a
# value), and its identity: Kubernetes keeps one taint per key and effect.
taint_spec() { # KEY VALUE EFFECT
    if [ -n "$2" ]; then printf '%s=%s:%s' "$1" "$2" "$3"; else printf '%s:%s' "$1" "$3"; fi
}
taint_id() { # SPEC -> key:effect
    spec_key=${1%:*}
    printf '%s:%s' "${spec_key%%=*}" "${1##*:}"
}

# --- the record -------------------------------------------------------------

# rec_cordoned: Ultron8 cordoned the node; rec_taints: the taints it added
# (space-separated specs); rec_seen: a record exists.
read_record() {
    raw=$(kubectl get node "$node" -o "jsonpath=$ANNOTATION_PATH")
    rec_cordoned=false
    rec_taints=
    rec_seen=false
    [ -n "$raw" ] || return 0
    case $raw in
        '{"cordoned":'*) ;;
        *) die "the annotation $ANNOTATION on node/$node is not a record Ultron8 wrote ($raw); fix or remove it (kubectl annotate node $node $ANNOTATION-)" ;;
    esac
    rec_seen=true
    case $raw in *'"cordoned":true'*) rec_cordoned=true ;; esac
    for spec in $(printf '%s' "$raw" | sed -n 's/.*"taints":\[\([^]]*\)\].*/\1/p' | tr ',"' '  '); do
        effect=${spec##*:}
        rest=${spec%:*}
        case $rest in *=*) key=${rest%%=*} value=${rest#*=} ;; *) key=$rest value= ;; esac
        if (check_taint "$key" "$value" "$effect") 2>/dev/null; then
            rec_taints="$rec_taints $spec"
        else
            echo "warning: ignoring \"$spec\" in $ANNOTATION on node/$node: not a taint" >&2
        fi
    done
    rec_taints=${rec_taints# }
}

# Writes the record, or removes the annotation when Ultron8 has nothing left
# to undo on the node (KEEP=true keeps an empty record: the evidence that
# the node was cordoned by someone else).
write_record() { # [KEEP]
    if [ "$rec_cordoned" = false ] && [ -z "$rec_taints" ] && [ "${1:-false}" != true ]; then
        if [ "$rec_seen" = true ]; then
            kubectl annotate node "$node" "$ANNOTATION-" >/dev/null
            rec_seen=false
        fi
        return 0
    fi
    list=
    for spec in $rec_taints; do list="$list${list:+,}\"$spec\""; done
    at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    json=$(printf '{"cordoned":%s,"taints":[%s],"by":"%s","at":"%s"}' "$rec_cordoned" "$list" "$by" "$at")
    kubectl annotate node "$node" --overwrite "$ANNOTATION=$json" >/dev/null
    rec_seen=true
}

# The node's taints, one `key:effect=value` a line.
node_taints() {
    kubectl get node "$node" -o 'jsonpath={range .spec.taints[*]}{.key}:{.effect}={.value}{"\n"}{end}'
}

# --- the verbs ----------------------------------------------------------------

do_cordon() {
    unschedulable=$(kubectl get node "$node" -o 'jsonpath={.spec.unschedulable}')
    if [ "$unschedulable" = true ]; then
        if [ "$rec_cordoned" = true ]; then
            echo "node/$node already cordoned by Ultron8"
            return 0
        fi
        echo "node/$node was already cordoned by someone else: recorded that Ultron8 did not cordon it, so undo leaves the cordon"
        write_record true
        return 0
    fi
    kubectl cordon "$node"
    rec_cordoned=true
    write_record
}

do_uncordon() {
    if [ "$rec_cordoned" != true ]; then
        echo "node/$node: Ultron8 did not cordon it; its cordon (if any) is left as it is"
        write_record
        return 0
    fi
    kubectl uncordon "$node"
    rec_cordoned=false
    write_record
}

do_drain() { # TIMEOUT IGNORE_DAEMONSETS DELETE_EMPTYDIR_DATA
    do_cordon
    # Evictions only (never --disable-eviction, never --force): a pod whose
    # PodDisruptionBudget forbids leaving stays, and the drain fails at the
    # timeout naming it. The node stays cordoned and recorded as ours.
    kubectl drain "$node" --timeout="$1s" --ignore-daemonsets="$2" --delete-emptydir-data="$3"
}

do_taint() { # KEY VALUE EFFECT
    spec=$(taint_spec "$1" "$2" "$3")
    id="$1:$3"
    ours=
    for recorded in $rec_taints; do
        [ "$(taint_id "$recorded")" = "$id" ] && ours=$recorded
    done
    current=
    found=false
    taints=$(node_taints)
    while IFS= read -r line; do
        case $line in "$id="*) found=true current=${line#"$id="} ;; esac
    done <<END
$taints
END
    if [ "$found" = true ] && [ -z "$ours" ]; then
        echo "node/$node already has a taint $id (value \"$current\") that Ultron8 did not add: left as it is, and not recorded"
        return 0
    fi
    if [ "$found" = true ] && [ "$current" = "$2" ]; then
        echo "node/$node already tainted $spec by Ultron8"
        return 0
    fi
    if [ "$found" = true ]; then
        kubectl taint nodes "$node" "$spec" --overwrite
    else
        kubectl taint nodes "$node" "$spec"
    fi
    kept=
    for recorded in $rec_taints; do
        [ "$(taint_id "$recorded")" = "$id" ] || kept="$kept $recorded"
    done
    rec_taints="${kept# }${kept:+ }$spec"
    rec_taints=${rec_taints# }
    write_record
}

do_untaint() { # KEY EFFECT (empty: any)
    taints=$(node_taints)
    kept=
    removed=0
    for recorded in $rec_taints; do
        id=$(taint_id "$recorded")
        if { [ -n "$1" ] && [ "${id%:*}" != "$1" ]; } || { [ -n "$2" ] && [ "${id##*:}" != "$2" ]; }; then
            kept="$kept $recorded"
            continue
        fi
        removed=$((removed + 1))
        case "$NL$taints" in
            *"$NL$id="*) kubectl taint nodes "$node" "$id-" ;;
            *) echo "node/$node: taint $id is already gone" ;;
        esac
    done
    rec_taints=${kept# }
    if [ "$removed" -eq 0 ]; then
        echo "node/$node: Ultron8 added no taint${1:+ $1}${2:+ with effect $2}; the node's taints are left as they are"
    fi
    write_record
}

do_status() {
    unschedulable=$(kubectl get node "$node" -o 'jsonpath={.spec.unschedulable}')
    echo "node/$node unschedulable: ${unschedulable:-false}"
    echo "taints:"
    node_taints | sed -e 's/^\(.*\):\([A-Za-z]*\)=$/  \1:\2/' -e t -e 's/^\(.*\):\([A-Za-z]*\)=\(.*\)$/  \1=\3:\2/'
    if [ "$rec_seen" = true ]; then
        echo "$ANNOTATION: $raw"
    else
        echo "$ANNOTATION: none (Ultron8 has nothing to undo here)"
    fi
}

case $verb in
    cordon | uncordon | undo | status) [ $# -eq 0 ] || die "$verb takes no further arguments" ;;
    drain)
        [ $# -eq 3 ] || die "usage: node.sh drain NODE BY TIMEOUT IGNORE_DAEMONSETS DELETE_EMPTYDIR_DATA"
        check_timeout "$1"
        check_bool ignore_daemonsets "$2"
        check_bool delete_emptydir_data "$3"
        ;;
    taint)
        [ $# -eq 3 ] || die "usage: node.sh taint NODE BY KEY VALUE EFFECT"
        check_taint "$1" "$2" "$3"
        ;;
    untaint)
        [ $# -eq 2 ] || die "usage: node.sh untaint NODE BY KEY EFFECT"
        [ -z "$1" ] || check_taint "$1" "" NoSchedule
        [ -z "$2" ] || check_effect "$2"
        ;;
    remediate)
        [ $# -eq 9 ] || die "usage: node.sh remediate NODE BY CORDON DRAIN TAINT TIMEOUT IGNORE_DAEMONSETS DELETE_EMPTYDIR_DATA KEY VALUE EFFECT"
        check_bool cordon "$1"
        check_bool drain "$2"
        check_bool taint "$3"
        check_timeout "$4"
        check_bool ignore_daemonsets "$5"
        check_bool delete_emptydir_data "$6"
        [ "$3" = false ] || check_taint "$7" "$8" "$9"
        [ "$1" = true ] || [ "$2" = true ] || [ "$3" = true ] ||
            die "remediate: nothing to do (cordon, drain and taint are all false)"
        ;;
    *) die "unknown verb \"$verb\" (cordon, uncordon, drain, taint, untaint, undo, remediate, status)" ;;
esac

read_record

case $verb in
    cordon) do_cordon ;;
    uncordon) do_uncordon ;;
    drain) do_drain "$1" "$2" "$3" ;;
    taint) do_taint "$1" "$2" "$3" ;;
    untaint) do_untaint "$1" "$2" ;;
    undo)
        do_untaint "" ""
        do_uncordon
        if [ "$rec_seen" = true ]; then
            kubectl annotate node "$node" "$ANNOTATION-" >/dev/null
        fi
        echo "node/$node: everything Ultron8 did is undone"
        ;;
    status) do_status ;;
    remediate)
        # Cordon and drain before the taint: a NoExecute taint evicts
        # without asking PodDisruptionBudgets, a drain does not.
        if [ "$2" = true ]; then
            do_drain "$4" "$5" "$6"
        elif [ "$1" = true ]; then
            do_cordon
        fi
        if [ "$3" = true ]; then do_taint "$7" "$8" "$9"; fi
        ;;
esac
