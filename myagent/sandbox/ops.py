"""Operations on the pipe between the front process and a sandbox.

Every frame is a dict with an ``op`` key. Keys are short because token deltas
cross this pipe one frame each.

Front -> sandbox:
    open     {sid, history}                 host a session (fresh agent + history)
    turn     {sid, turn, text}              run one turn
    cancel   {sid, turn, reason}            cancel the running turn (reason: CANCELLED, TURN_TIMEOUT, ...)
    confirm  {sid, step, ok}                answer an agent.user_confirm
    close    {sid}                          forget a session
    stop     {}                             exit after cancelling every turn

Sandbox -> front:
    ready    {pid}                          the sandbox serves
    hb       {}                             heartbeat (the event loop is alive)
    opened   {sid} / open_failed {sid, error}
    ev       {sid, turn, k, c, st, m}       one agent event (k = kind without "agent.")
    msg      {sid, m}                       one message appended to the session's history
    closed   {sid}

Zygote control socket (SOCK_SEQPACKET, one JSON document per message):
    front -> zygote: fork {req} + the sandbox's socket as SCM_RIGHTS
    zygote -> front: loaded {agent} / load_error {reason} / forked {req, pid} / exited {pid, code, signal}
"""

OPEN = "open"
TURN = "turn"
CANCEL = "cancel"
CONFIRM = "confirm"
CLOSE = "close"
STOP = "stop"

READY = "ready"
HEARTBEAT = "hb"
OPENED = "opened"
OPEN_FAILED = "open_failed"
EVENT = "ev"
MESSAGE = "msg"
CLOSED = "closed"

FORK = "fork"
LOADED = "loaded"
LOAD_ERROR = "load_error"
FORKED = "forked"
EXITED = "exited"

# Exit codes of the zygote and sandboxes (gunicorn-style named codes).
EXIT_OK = 0
EXIT_LOAD_ERROR = 3
EXIT_PARENT_GONE = 4
EXIT_PIPE_ERROR = 5
EXIT_AGENT_EXIT = 6  # agent code raised SystemExit (or KeyboardInterrupt) during a turn
