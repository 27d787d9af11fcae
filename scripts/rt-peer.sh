#!/usr/bin/env bash
# rt-peer.sh — a real Request Tracker 5 (Debian packages, SQLite) as the far side of the
# `rt` connector, for tests, demos and local work. Idempotent; see docs/connectors/rt.md.
#
#   rt-peer.sh install              apt-get install RT 5 (preseeded, SQLite); skip when installed
#   rt-peer.sh start [--port N]     seed a database if there is none, start RT on 127.0.0.1:N
#                                   (default: the previous port if free, else a free port),
#                                   wait for REST2, print and write $RT_PEER_DIR/peer.env
#   rt-peer.sh reset [--port N] [--full]
#                                   stop, fresh seeded database (from a snapshot; --full rebuilds
#                                   it from scratch), start
#   rt-peer.sh stop                 stop the server (by its pid) and wait
#   rt-peer.sh status               running? port? REST2 answer?
#   rt-peer.sh env                  print peer.env (RT_URL, tokens, CCBRIDGE_RT_* lines)
#
# Environment: RT_PEER_DIR (state dir, default /var/lib/rt-bridge-peer), RT_PEER_WORKERS
# (Starlet workers, default 2). Exit codes: 0 ok, 1 failed, 2 usage, 3 cannot run here
# (not root, not Debian/apt), 4 RT not installed (run `sudo scripts/rt-peer.sh install`).
# Port 8080 is only used when asked for with --port 8080.
set -euo pipefail

RT_PEER_DIR="${RT_PEER_DIR:-/var/lib/rt-bridge-peer}"
RT_PEER_WORKERS="${RT_PEER_WORKERS:-2}"
PACKAGES=(request-tracker5 rt5-db-sqlite rt5-standalone rt5-clients)
SITE_CONFIG=/etc/request-tracker5/RT_SiteConfig.d/90-bridge-peer.pm
RT_LIB=/usr/share/request-tracker5/lib
RT_SERVER=/usr/share/request-tracker5/libexec/rt-server
RT_SETUP=/usr/sbin/rt-setup-database-5
DB_DIR="$RT_PEER_DIR/db"
DB_FILE="$DB_DIR/rtdb"
SNAPSHOT="$RT_PEER_DIR/rtdb.clean"
SNAPSHOT_VERSION="$RT_PEER_DIR/rtdb.clean.version"
TOKENS="$RT_PEER_DIR/tokens.env"
PEER_ENV="$RT_PEER_DIR/peer.env"
PID_FILE="$RT_PEER_DIR/rt-server.pid"
PORT_FILE="$RT_PEER_DIR/port"
LOG_FILE="$RT_PEER_DIR/rt-server.log"
SEED_FILE="$RT_PEER_DIR/initialdata.pm"

QUEUE="Chat Handover"
CONVERSATION_FIELD="Infobip Conversation"
BRIDGE_USER=bridge
AGENT_USER=agent1

die() { local code=$1; shift; echo "rt-peer: $*" >&2; exit "$code"; }
say() { echo "rt-peer: $*" >&2; }
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

require_root() {
  [[ $(id -u) -eq 0 ]] || die 3 "must run as root (it installs packages, writes /etc/request-tracker5 and runs RT as www-data): sudo $0 $*"
}

require_apt() {
  [[ -r /etc/debian_version ]] && command -v apt-get >/dev/null && command -v dpkg-query >/dev/null \
    || die 3 "needs Debian (12, bookworm) with apt-get; this machine has none"
}

installed() {
  local p status
  for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || return 1
  done
}

require_installed() {
  installed || die 4 "Request Tracker 5 is not installed: run sudo $0 install"
}

rt_version() { dpkg-query -W -f='${Version}' request-tracker5; }

# Progress of long steps: "[n/N] what (elapsed)" lines on stderr; apt's own progress bar on
# a terminal, its quiet log-friendly output (no progress indicators) elsewhere.
T0=$(now)
step() { say "[$1/$2] $3 ($(took "$T0"))"; }
apt_progress() {
  if [[ -t 1 ]]; then echo "-o Dpkg::Progress-Fancy=1"; else echo "-q -o Dpkg::Use-Pty=0"; fi
}

cmd_install() {
  require_apt
  require_root install
  if installed; then
    say "already installed (request-tracker5 $(rt_version))"
    return 0
  fi
  T0=$(now)
  local progress count
  progress=$(apt_progress)
  # Our site config points RT at the peer's database; the package's own database setup
  # must not see it (start writes it again).
  rm -f "$SITE_CONFIG"
  step 1 3 "apt-get update"
  # shellcheck disable=SC2086  # the options are separate words
  apt-get $progress update
  debconf-set-selections <<'EOF'
request-tracker5 request-tracker5/rtname string rt.bridge.test
request-tracker5 request-tracker5/organization string rt.bridge.test
request-tracker5 request-tracker5/correspondaddress string support@rt.bridge.test
request-tracker5 request-tracker5/commentaddress string support-comment@rt.bridge.test
request-tracker5 request-tracker5/webbaseurl string http://127.0.0.1:8080
request-tracker5 request-tracker5/webpath string /rt
request-tracker5 request-tracker5/handle-siteconfig-permissions boolean true
request-tracker5 request-tracker5/install-cronjobs boolean false
request-tracker5 request-tracker5/initial-root-password password rootpass123
request-tracker5 request-tracker5/dbconfig-install boolean true
request-tracker5 request-tracker5/database-type select sqlite3
EOF
  count=$(apt-get install -s --no-install-recommends "${PACKAGES[@]}" 2>/dev/null \
    | grep -c '^Inst ' || true)
  step 2 3 "downloading and unpacking $count packages (RT 5 and its Perl dependencies; minutes)"
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get $progress install -y --no-install-recommends \
    "${PACKAGES[@]}"
  step 3 3 "installed request-tracker5 $(rt_version)"
}

# --- state ---------------------------------------------------------------------------

lock() {
  mkdir -p "$RT_PEER_DIR"
  chmod 0755 "$RT_PEER_DIR"
  exec 9>"$RT_PEER_DIR/.lock"
  flock -w 120 9 || die 1 "another rt-peer.sh holds $RT_PEER_DIR/.lock"
}

running_pid() {
  # The pid file names the Starlet master; only trust it while it still is rt-server.
  local pid
  [[ -s $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'rt-server' || return 1
  echo "$pid"
}

free_port() {
  perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 0, Listen => 1, ReuseAddr => 1)
      or die "no free port: $!\n";
    print $s->sockport, "\n";'
}

port_free() {
  perl -MIO::Socket::INET -e '
    exit(IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0], Listen => 1, ReuseAddr => 1) ? 0 : 1)' "$1"
}

write_site_config() {
  local port=$1 tmp
  tmp=$(mktemp "$SITE_CONFIG.XXXXXX")
  cat >"$tmp" <<EOF
# Written by ccbridge scripts/rt-peer.sh: the local RT peer of the bridge. Rewritten on start.
Set(\$DatabaseName, '$DB_FILE');   # the peer's own SQLite file (reset replaces it)
Set(\$MailCommand, 'mbox');        # outgoing mail goes to \$VarPath/<date>.mbox, never sent
Set(\$LogToSyslog, undef);         # no syslog daemon here
Set(\$LogToSTDERR, 'info');        # -> $LOG_FILE
Set(\$WebDomain, '127.0.0.1');
Set(\$WebPort, $port);
Set(\$WebPath, '/rt');
Set(\$WebBaseURL, 'http://127.0.0.1:$port');
1;
EOF
  chown root:www-data "$tmp"
  chmod 0640 "$tmp"
  mv -f "$tmp" "$SITE_CONFIG"
  # Debian ships the (empty) main file root-only; www-data then logs "Permission denied".
  if [[ -f /etc/request-tracker5/RT_SiteConfig.pm ]]; then
    chgrp www-data /etc/request-tracker5/RT_SiteConfig.pm
    chmod 0640 /etc/request-tracker5/RT_SiteConfig.pm
  fi
}

write_seed() {
  cat >"$SEED_FILE" <<'EOF'
# RT initialdata for the ccbridge RT peer (loaded by rt-setup-database --action insert).
our @Queues = ({
    Name              => 'Chat Handover',
    Description       => 'Chats handed over by the Infobip bridge',
    CorrespondAddress => 'support@rt.bridge.test',
    CommentAddress    => 'support-comment@rt.bridge.test',
});

our @CustomFields = ({
    Name        => 'Infobip Conversation',
    Type        => 'FreeformSingle',
    LookupType  => 'RT::Queue-RT::Ticket',
    Queue       => ['Chat Handover'],
    Description => 'Infobip conversation id (set by the bridge; correlation key)',
});

our @Users = (
    { Name => 'bridge', RealName => 'Infobip handover bridge', EmailAddress => 'bridge@rt.bridge.test',
      Password => 'bridgepass123', Privileged => 1 },
    { Name => 'agent1', RealName => 'Alice Agent', EmailAddress => 'agent1@rt.bridge.test',
      Password => 'agentpass123', Privileged => 1 },
);

our @ACL = (
    ( map { { GroupDomain => 'SystemInternal', GroupType => 'Privileged',
              Queue => 'Chat Handover', Right => $_ } }
      qw(SeeQueue ShowTicket CreateTicket ReplyToTicket CommentOnTicket ShowTicketComments
         ModifyTicket OwnTicket TakeTicket StealTicket Watch WatchAsAdminCc ShowOutgoingEmail
         SeeCustomField ModifyCustomField) ),
    { GroupDomain => 'SystemInternal', GroupType => 'Privileged', Right => 'ManageAuthTokens' },
    # The customer (requestor) may post through the mail gateway.
    ( map { { GroupDomain => 'RT::Queue-Role', GroupType => 'Requestor',
              Queue => 'Chat Handover', Right => $_ } } qw(ReplyToTicket ShowTicket) ),
);

our @Final = (sub {
    my $root = RT::User->new(RT->SystemUser);
    $root->Load('root');
    $root->SetPassword('rootpass123');
    # API tokens (no REST call creates them in RT 5.0.3); written for rt-peer.sh to pick up.
    my $out = $ENV{RT_PEER_TOKENS_OUT} or die "RT_PEER_TOKENS_OUT not set\n";
    open(my $fh, '>', $out) or die "cannot write $out: $!\n";
    for my $pair (['bridge', 'RT_BRIDGE_TOKEN'], ['agent1', 'RT_AGENT1_TOKEN']) {
        my $user = RT::User->new(RT->SystemUser);
        $user->Load($pair->[0]);
        my ($id, $msg, $token) = RT::AuthToken->new(RT->SystemUser)->Create(
            Owner => $user->id, Description => 'ccbridge rt-peer');
        die "token for $pair->[0]: $msg\n" unless $id;
        print $fh "$pair->[1]=$token\n";
    }
    close($fh) or die "cannot write $out: $!\n";
});
1;
EOF
}

build_database() {
  # Fresh schema + RT core data + our seed, into the peer's own SQLite file, then snapshot it.
  local t0 tmp_tokens; t0=$(now)
  say "building a clean seeded database (schema, RT's data, our seed; once per RT version)"
  write_seed
  rm -rf "$DB_DIR"
  mkdir -p "$DB_DIR"
  chown www-data:www-data "$DB_DIR"
  chmod 0700 "$DB_DIR"
  "$RT_SETUP" --action init --dba '' --dba-password '' >"$RT_PEER_DIR/setup.log" 2>&1 \
    || { tail -20 "$RT_PEER_DIR/setup.log" >&2; die 1 "rt-setup-database --action init failed"; }
  say "  schema ready ($(took "$t0")); seeding the queue, users and tokens"
  tmp_tokens=$(mktemp "$RT_PEER_DIR/tokens.XXXXXX")
  RT_PEER_TOKENS_OUT="$tmp_tokens" "$RT_SETUP" --action insert --datafile "$SEED_FILE" \
    >>"$RT_PEER_DIR/setup.log" 2>&1 \
    || { tail -20 "$RT_PEER_DIR/setup.log" >&2; rm -f "$tmp_tokens"; die 1 "seeding failed"; }
  chmod 0600 "$tmp_tokens"
  mv -f "$tmp_tokens" "$TOKENS"
  chown www-data:www-data "$DB_FILE"
  chmod 0600 "$DB_FILE"
  cp -f "$DB_FILE" "$SNAPSHOT"
  cp -f "$TOKENS" "$SNAPSHOT.tokens"
  chmod 0600 "$SNAPSHOT" "$SNAPSHOT.tokens"
  rt_version >"$SNAPSHOT_VERSION"
  say "built a clean seeded database in $(took "$t0")"
}

restore_snapshot() {
  local t0; t0=$(now)
  rm -rf "$DB_DIR"
  mkdir -p "$DB_DIR"
  cp -f "$SNAPSHOT" "$DB_FILE"
  cp -f "$SNAPSHOT.tokens" "$TOKENS"
  chmod 0600 "$TOKENS" "$DB_FILE"
  chown -R www-data:www-data "$DB_DIR"
  chmod 0700 "$DB_DIR"
  say "restored the clean seeded database in $(took "$t0")"
}

snapshot_ok() {
  [[ -s $SNAPSHOT && -s $SNAPSHOT.tokens && -s $SNAPSHOT_VERSION ]] \
    && [[ $(<"$SNAPSHOT_VERSION") == "$(rt_version)" ]]
}

fresh_database() {
  local full=$1
  # RT's "sent" mail of the old database (mbox files written instead of sending).
  rm -f /var/lib/request-tracker5/*.mbox
  if [[ $full == 0 ]] && snapshot_ok; then restore_snapshot; else build_database; fi
}

rest2_status() {
  curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$1/rt/REST/2.0/rt" || true
}

write_peer_env() {
  local port=$1 url tmp
  url="http://127.0.0.1:$port/rt"
  # shellcheck disable=SC1090
  . "$TOKENS"
  tmp=$(mktemp "$PEER_ENV.XXXXXX")
  chmod 0600 "$tmp"
  cat >"$tmp" <<EOF
RT_URL=$url
RT_PORT=$port
RT_BRIDGE_USER=$BRIDGE_USER
RT_BRIDGE_TOKEN=$RT_BRIDGE_TOKEN
RT_AGENT1_USER=$AGENT_USER
RT_AGENT1_TOKEN=$RT_AGENT1_TOKEN
CCBRIDGE_RT_URL=$url
CCBRIDGE_RT_TOKEN=$RT_BRIDGE_TOKEN
CCBRIDGE_RT_QUEUE='$QUEUE'
CCBRIDGE_RT_CONVERSATION_FIELD='$CONVERSATION_FIELD'
EOF
  mv -f "$tmp" "$PEER_ENV"
}

stop_server() {
  local pid i
  pid=$(running_pid) || { rm -f "$PID_FILE"; return 0; }
  local t0; t0=$(now)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "rt-server $pid ignored TERM for 15 s; killing its process group"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  # Workers share the master's process group (setsid at start); take any straggler down.
  for ((i = 0; i < 50; i++)); do
    pgrep -g "$pid" >/dev/null 2>&1 || break
    sleep 0.1
  done
  pgrep -g "$pid" >/dev/null 2>&1 && kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  say "stopped rt-server $pid in $(took "$t0")"
}

start_server() {
  local port=$1 pid i code t0; t0=$(now)
  port_free "$port" || die 1 "port $port on 127.0.0.1 is in use"
  write_site_config "$port"
  chown -R www-data /var/cache/request-tracker5 /var/lib/request-tracker5
  : >>"$LOG_FILE"
  echo "--- $(date -u +%FT%TZ) start on 127.0.0.1:$port" >>"$LOG_FILE"
  # setsid: own session and process group (stop can reach the workers); setpriv execs, so
  # $! is the Starlet master. 9>&-: the server must not inherit our lock.
  nohup setsid setpriv --reuid=www-data --regid=www-data --init-groups \
    "$RT_SERVER" --server Starlet --host 127.0.0.1 --port "$port" --webpath /rt \
    --max-workers "$RT_PEER_WORKERS" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  echo "$port" >"$PORT_FILE"
  for ((i = 0; i < 600; i++)); do
    code=$(rest2_status "$port")
    [[ $code == 401 ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -20 "$LOG_FILE" >&2
      rm -f "$PID_FILE"
      die 1 "rt-server exited during start (log: $LOG_FILE)"
    fi
    sleep 0.1
  done
  [[ $code == 401 ]] || { stop_server; die 1 "REST2 did not answer within 60 s (last HTTP $code; log: $LOG_FILE)"; }
  say "rt-server $pid answers on 127.0.0.1:$port in $(took "$t0")"
}

token_works() {
  local port=$1
  # shellcheck disable=SC1090
  . "$TOKENS"
  [[ $(curl -s -o /dev/null -m 5 -w '%{http_code}' -H "Authorization: token $RT_BRIDGE_TOKEN" \
        "http://127.0.0.1:$port/rt/REST/2.0/rt") == 200 ]]
}

choose_port() {
  local requested=$1 previous
  if [[ -n $requested ]]; then echo "$requested"; return; fi
  previous=$(cat "$PORT_FILE" 2>/dev/null || true)
  if [[ $previous =~ ^[0-9]+$ && $previous != 8080 ]] && port_free "$previous"; then
    echo "$previous"
  else
    free_port
  fi
}

parse_port_args() {
  PORT_ARG="" FULL=0
  while [[ $# -gt 0 ]]; do
    case $1 in
      --port) [[ ${2:-} =~ ^[0-9]+$ ]] || die 2 "--port needs a number"; PORT_ARG=$2; shift 2 ;;
      --port=*) PORT_ARG=${1#--port=}; [[ $PORT_ARG =~ ^[0-9]+$ ]] || die 2 "--port needs a number"; shift ;;
      --full) FULL=1; shift ;;
      *) die 2 "unknown argument: $1" ;;
    esac
  done
}

print_env() { cat "$PEER_ENV"; }

cmd_start() {
  parse_port_args "$@"
  require_apt; require_root start; require_installed; lock
  local pid port current
  if pid=$(running_pid); then
    current=$(cat "$PORT_FILE" 2>/dev/null || true)
    if [[ -z $PORT_ARG || $PORT_ARG == "$current" ]] && [[ $(rest2_status "$current") == 401 ]]; then
      say "already running (pid $pid, port $current)"
      write_peer_env "$current"
      print_env
      return 0
    fi
    stop_server
  fi
  port=$(choose_port "$PORT_ARG")
  write_site_config "$port"   # names the peer's database file: needed before building it
  [[ -s $DB_FILE && -s $TOKENS ]] || fresh_database 0
  start_server "$port"
  if ! token_works "$port"; then
    # The database was replaced behind our back: start over from a clean one.
    say "stored tokens are not valid for this database; resetting it"
    stop_server
    fresh_database 0
    start_server "$port"
    token_works "$port" || die 1 "the bridge token does not work even after a reset"
  fi
  write_peer_env "$port"
  print_env
}

cmd_reset() {
  parse_port_args "$@"
  require_apt; require_root reset; require_installed; lock
  local t0 port current; t0=$(now)
  current=$(cat "$PORT_FILE" 2>/dev/null || true)
  stop_server
  if [[ -n $PORT_ARG ]]; then port=$PORT_ARG
  elif [[ $current =~ ^[0-9]+$ && $current != 8080 ]] && port_free "$current"; then port=$current
  else port=$(free_port); fi
  write_site_config "$port"   # names the peer's database file: needed before building it
  fresh_database "$FULL"
  start_server "$port"
  token_works "$port" || die 1 "the bridge token does not work after the reset"
  write_peer_env "$port"
  say "reset done in $(took "$t0")"
  print_env
}

cmd_stop() {
  [[ $# -eq 0 ]] || die 2 "stop takes no arguments"
  require_root stop; lock
  stop_server
}

cmd_status() {
  local pid port
  port=$(cat "$PORT_FILE" 2>/dev/null || true)
  if installed 2>/dev/null; then echo "installed: request-tracker5 $(rt_version)"; else echo "installed: no"; fi
  if pid=$(running_pid); then
    echo "running: pid $pid on 127.0.0.1:$port (REST2 unauthenticated: HTTP $(rest2_status "$port"))"
    echo "url: http://127.0.0.1:$port/rt"
  else
    echo "running: no"
    return 1
  fi
}

cmd_env() {
  [[ -r $PEER_ENV ]] || die 1 "no $PEER_ENV yet (run: $0 start)"
  print_env
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    install) [[ $# -eq 0 ]] || die 2 "install takes no arguments"; cmd_install ;;
    start) cmd_start "$@" ;;
    reset) cmd_reset "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"
