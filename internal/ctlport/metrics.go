package ctlport

import "github.com/prometheus/client_golang/prometheus"

// Refusal reasons: the label values of refused_total.
const (
	reasonClosed       = "closed"        // the Server was closed: RST
	reasonLimit        = "limit"         // all connections taken: RST
	reasonSourceShare  = "source_share"  // the workstation's share taken: RST
	reasonHandshake    = "handshake"     // the handshake did not complete
	reasonAuthRequired = "auth_required" // a command before AUTHENTICATE: 514, closed
	reasonPreAuth      = "preauth"       // no AUTHENTICATE in time or in maxPreAuthCommands: closed
	reasonLineTooLong  = "line_too_long" // longer than MaxLine: closed
	reasonControlChar  = "control_char"  // NUL or binary in a line: closed
	reasonHTTP         = "http"          // a line like an HTTP request: closed
	reasonDataTooLong  = "data_too_long" // a "+" command's data over maxDataBytes: closed
	reasonCommand      = "command"       // a command not served: 510
	reasonSyntax       = "syntax"        // a served command with bad arguments: 512
	reasonInfoKey      = "info_key"      // a GETINFO key not served: 552
	reasonConfKey      = "conf_key"      // a GETCONF key not served: 552
	reasonSignal       = "signal"        // a signal other than NEWNYM: 552
	reasonEvent        = "event"         // an unknown event in SETEVENTS: 552
	reasonFeature      = "feature"       // an unknown USEFEATURE: 552
	reasonUnavailable  = "unavailable"   // Tor could not answer: 551
)

var reasons = []string{
	reasonClosed, reasonLimit, reasonSourceShare, reasonHandshake,
	reasonAuthRequired, reasonPreAuth, reasonLineTooLong, reasonControlChar,
	reasonHTTP, reasonDataTooLong, reasonCommand, reasonSyntax, reasonInfoKey,
	reasonConfKey, reasonSignal, reasonEvent, reasonFeature, reasonUnavailable,
}

// commandLabels are the commands counted by name in commands_total; any
// other keyword is counted as "other". The list is fixed so the label's
// values are bounded whatever a workstation sends: it holds what ctlport
// serves and the commands of Tor's spec a hostile client would try.
var commandLabels = func() map[string]bool {
	m := map[string]bool{}
	for _, c := range []string{
		"PROTOCOLINFO", "AUTHENTICATE", "AUTHCHALLENGE", "GETINFO", "GETCONF",
		"SETEVENTS", "SIGNAL", "USEFEATURE", "QUIT",
		"SETCONF", "RESETCONF", "LOADCONF", "SAVECONF", "ADD_ONION", "DEL_ONION",
		"TAKEOWNERSHIP", "DROPOWNERSHIP", "DROPGUARDS", "DROPTIMEOUTS",
		"MAPADDRESS", "EXTENDCIRCUIT", "SETCIRCUITPURPOSE", "SETROUTERPURPOSE",
		"ATTACHSTREAM", "REDIRECTSTREAM", "CLOSESTREAM", "CLOSECIRCUIT",
		"POSTDESCRIPTOR", "RESOLVE", "HSFETCH", "HSPOST",
		"ONION_CLIENT_AUTH_ADD", "ONION_CLIENT_AUTH_REMOVE", "ONION_CLIENT_AUTH_VIEW",
	} {
		m[c] = true
	}
	return m
}()

// NEWNYM results: the label values of newnym_total.
const (
	nymDone      = "done"      // NewIdentity called at once
	nymDelayed   = "delayed"   // early: NewIdentity called when the interval ends
	nymCoalesced = "coalesced" // early while one was already waiting: nothing more to do
	nymFailed    = "failed"    // NewIdentity returned an error
)

type metrics struct {
	open      prometheus.Gauge
	commands  *prometheus.CounterVec
	refused   *prometheus.CounterVec
	newnym    *prometheus.CounterVec
	throttled prometheus.Counter
	torErrors prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ctlport_connections",
			Help: "Open workstation connections to the filtered control port.",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ctlport_commands_total",
			Help: "Control commands received from workstations, by command (other: not a known command).",
		}, []string{"command"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ctlport_refused_total",
			Help: "Control port connections and commands refused, by reason.",
		}, []string{"reason"}),
		newnym: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ctlport_newnym_total",
			Help: "SIGNAL NEWNYM from workstations, by result.",
		}, []string{"result"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ctlport_throttled_total",
			Help: "Commands held back by the per-connection command rate.",
		}),
		torErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ctlport_tor_errors_total",
			Help: "GETINFO requests to Tor for a workstation that failed.",
		}),
	}
	for c := range commandLabels {
		m.commands.WithLabelValues(c)
	}
	m.commands.WithLabelValues("other")
	for _, r := range reasons {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{nymDone, nymDelayed, nymCoalesced, nymFailed} {
		m.newnym.WithLabelValues(r)
	}
	return m
}

func (m *metrics) refuse(reason string) { m.refused.WithLabelValues(reason).Inc() }

func (m *metrics) command(keyword string) {
	if !commandLabels[keyword] {
		keyword = "other"
	}
	m.commands.WithLabelValues(keyword).Inc()
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.open, m.commands, m.refused, m.newnym, m.throttled, m.torErrors}
}
