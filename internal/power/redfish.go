package power

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
)

// The Redfish driver speaks to the few resources it needs with net/http
// (DESIGN.md: no Redfish client module is served here, and gofish-sized
// clients are mostly schema types this driver never reads): the service
// root, the Systems collection, one ComputerSystem (PowerState, Boot,
// the #ComputerSystem.Reset action) and, when a BMC lists the reset
// types there instead, the action's ActionInfo. Authentication is HTTP
// Basic on every request: no session to leak or expire.

// maxBody bounds every Redfish answer bty reads.
const maxBody = 1 << 20

// offPoll is how often a ForceOff-then-On cycle asks whether the
// machine is off yet.
var offPoll = 500 * time.Millisecond

type redfish struct {
	c    Config
	o    options
	base *url.URL
	hc   *http.Client
}

var _ Driver = (*redfish)(nil)

func newRedfish(c Config, o options) (*redfish, error) {
	base, err := redfishBase(c.Address)
	if err != nil { // Validate checked it; keep the error path anyway
		return nil, fmt.Errorf("redfish address: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.Insecure} //nolint:gosec // only when the operator sets Insecure
	hc := &http.Client{
		Transport: tr,
		// Follow at most a few redirects and only on the BMC itself (an
		// http to https upgrade): credentials go to the BMC only.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("more than 3 redirects")
			}
			if req.URL.Hostname() != base.Hostname() {
				return fmt.Errorf("refused a redirect to another host (%s): set the address to the BMC's own URL", req.URL.Host)
			}
			return nil
		},
	}
	return &redfish{c: c, o: o, base: base, hc: hc}, nil
}

// computerSystem is the part of a Redfish ComputerSystem bty reads.
type computerSystem struct {
	ODataID    string `json:"@odata.id"`
	ID         string `json:"Id"`
	PowerState string `json:"PowerState"`
	Boot       struct {
		Target         string   `json:"BootSourceOverrideTarget"`
		TargetAllowed  []string `json:"BootSourceOverrideTarget@Redfish.AllowableValues"`
		EnabledAllowed []string `json:"BootSourceOverrideEnabled@Redfish.AllowableValues"`
	} `json:"Boot"`
	Actions struct {
		Reset struct {
			Target     string   `json:"target"`
			Allowed    []string `json:"ResetType@Redfish.AllowableValues"`
			ActionInfo string   `json:"@Redfish.ActionInfo"`
		} `json:"#ComputerSystem.Reset"`
	} `json:"Actions"`

	path string // where it was read from
	etag string
}

type odataRef struct {
	ID string `json:"@odata.id"`
}

func (r *redfish) Power(ctx context.Context, a Action) (State, error) {
	if err := checkAction(a); err != nil {
		return StateUnknown, err
	}
	st, err := r.power(ctx, a)
	return st, scrubErr(err, r.c.Password)
}

func (r *redfish) power(ctx context.Context, a Action) (State, error) {
	sys, err := r.system(ctx)
	if err != nil {
		return StateUnknown, err
	}
	now := redfishState(sys.PowerState)
	if a == Status {
		return now, nil
	}
	var resets []string // reset types to send, in order
	switch {
	case a == On && now == StateOn, a == Off && now == StateOff:
		return now, nil
	case a == On, a == Cycle && now == StateOff:
		t, err := r.resetType(ctx, sys, "On", "ForceOn")
		if err != nil {
			return StateUnknown, err
		}
		resets = []string{t}
	case a == Off:
		t, err := r.resetType(ctx, sys, "ForceOff", "GracefulShutdown")
		if err != nil {
			return StateUnknown, err
		}
		resets = []string{t}
	case a == Cycle:
		t, err := r.resetType(ctx, sys, "PowerCycle", "ForceRestart")
		if err == nil {
			resets = []string{t}
		} else if off, err2 := r.resetType(ctx, sys, "ForceOff"); err2 == nil {
			on, err3 := r.resetType(ctx, sys, "On", "ForceOn")
			if err3 != nil {
				return StateUnknown, err3
			}
			resets = []string{off, on}
		} else {
			return StateUnknown, err
		}
	}
	for i, t := range resets {
		if i > 0 { // ForceOff then On: wait for off first
			if err := r.waitOff(ctx, sys.path); err != nil {
				return StateUnknown, err
			}
		}
		if err := r.reset(ctx, sys, t); err != nil {
			return StateUnknown, err
		}
	}
	after, err := r.read(ctx, sys.path)
	if err != nil {
		return StateUnknown, fmt.Errorf("after the %s request: %w", a, err)
	}
	return redfishState(after.PowerState), nil
}

func redfishState(s string) State {
	switch s {
	case "On":
		return StateOn
	case "Off":
		return StateOff
	}
	return StateUnknown // PoweringOn, PoweringOff, Paused, absent
}

// resetType returns the first of want the BMC offers for the system's
// Reset action, from ResetType@Redfish.AllowableValues or else the
// action's ActionInfo. A BMC that lists neither is trusted to take the
// first of want.
func (r *redfish) resetType(ctx context.Context, sys *computerSystem, want ...string) (string, error) {
	allowed := sys.Actions.Reset.Allowed
	if allowed == nil && sys.Actions.Reset.ActionInfo != "" {
		var info struct {
			Parameters []struct {
				Name            string
				AllowableValues []string
			}
		}
		if _, err := r.getJSON(ctx, sys.Actions.Reset.ActionInfo, &info); err != nil {
			return "", fmt.Errorf("reading the reset action's ActionInfo: %w", err)
		}
		for _, p := range info.Parameters {
			if p.Name == "ResetType" {
				allowed = p.AllowableValues
			}
		}
	}
	if allowed == nil {
		r.o.log.Debug("BMC lists no reset types; trying the first wanted", "reset_type", want[0])
		return want[0], nil
	}
	for _, w := range want {
		if slices.Contains(allowed, w) {
			return w, nil
		}
	}
	return "", fmt.Errorf("%w: system %s offers the reset types %s, none of %s: control its power by other means or update the BMC's firmware",
		ErrBMC, sys.path, strings.Join(allowed, ", "), strings.Join(want, ", "))
}

func (r *redfish) reset(ctx context.Context, sys *computerSystem, resetType string) error {
	target := sys.Actions.Reset.Target
	if target == "" {
		return fmt.Errorf("%w: system %s has no #ComputerSystem.Reset action: this BMC cannot switch its power over Redfish; try the ipmi driver", ErrBMC, sys.path)
	}
	body := map[string]string{"ResetType": resetType}
	if _, err := r.do(ctx, http.MethodPost, target, body, ""); err != nil {
		return fmt.Errorf("reset %s: %w", resetType, err)
	}
	r.o.log.Info("BMC reset requested", "system", sys.path, "reset_type", resetType)
	return nil
}

// waitOff polls the system until it reports Off or the timeout passes.
func (r *redfish) waitOff(ctx context.Context, sysPath string) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.timeout)
	defer cancel()
	for {
		sys, err := r.read(ctx, sysPath)
		if err != nil {
			return fmt.Errorf("waiting for the machine to power off: %w", err)
		}
		if redfishState(sys.PowerState) == StateOff {
			return nil
		}
		t := time.NewTimer(offPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: system %s still reports %s %s after ForceOff: check the machine, then power it on", ErrBMC, sysPath, sys.PowerState, r.o.timeout)
		case <-t.C:
		}
	}
}

func (r *redfish) PXEOnce(ctx context.Context) (bool, error) {
	ok, err := r.pxeOnce(ctx)
	return ok, scrubErr(err, r.c.Password)
}

func (r *redfish) pxeOnce(ctx context.Context) (bool, error) {
	sys, err := r.system(ctx)
	if err != nil {
		return false, err
	}
	if !slices.Contains(sys.Boot.TargetAllowed, "Pxe") {
		r.o.log.Info("BMC offers no PXE boot override", "system", sys.path, "targets", sys.Boot.TargetAllowed)
		return false, nil
	}
	if sys.Boot.EnabledAllowed != nil && !slices.Contains(sys.Boot.EnabledAllowed, "Once") {
		r.o.log.Info("BMC offers no one-time boot override", "system", sys.path, "enabled", sys.Boot.EnabledAllowed)
		return false, nil
	}
	body := map[string]any{"Boot": map[string]string{
		"BootSourceOverrideTarget":  "Pxe",
		"BootSourceOverrideEnabled": "Once",
	}}
	if _, err := r.do(ctx, http.MethodPatch, sys.path, body, sys.etag); err != nil {
		return false, fmt.Errorf("setting a one-time PXE boot: %w", err)
	}
	r.o.log.Info("BMC set to PXE boot once", "system", sys.path)
	return true, nil
}

// system finds the ComputerSystem Config.System names (or the only one)
// and reads it.
func (r *redfish) system(ctx context.Context) (*computerSystem, error) {
	var root struct {
		Systems odataRef `json:"Systems"`
	}
	if _, err := r.getJSON(ctx, "/redfish/v1", &root); err != nil {
		return nil, fmt.Errorf("reading the service root: %w", err)
	}
	if root.Systems.ID == "" {
		return nil, fmt.Errorf("%w: the service root at %s/redfish/v1 lists no Systems: this BMC offers no ComputerSystem over Redfish; try the ipmi driver", ErrBMC, r.base)
	}
	var coll struct {
		Members []odataRef `json:"Members"`
	}
	if _, err := r.getJSON(ctx, root.Systems.ID, &coll); err != nil {
		return nil, fmt.Errorf("reading the Systems collection: %w", err)
	}
	ids := make([]string, 0, len(coll.Members))
	for _, m := range coll.Members {
		if m.ID != "" {
			ids = append(ids, m.ID)
		}
	}
	var pick string
	switch want := strings.TrimSuffix(r.c.System, "/"); {
	case want != "":
		for _, id := range ids {
			id0 := strings.TrimSuffix(id, "/")
			if id0 == want || path.Base(id0) == want {
				pick = id
				break
			}
		}
		if pick == "" {
			return nil, fmt.Errorf("%w: the BMC has no system %q; its systems are %s: set system to one of them", ErrBMC, r.c.System, strings.Join(ids, ", "))
		}
	case len(ids) == 1:
		pick = ids[0]
	case len(ids) == 0:
		return nil, fmt.Errorf("%w: the BMC's Systems collection %s is empty: this BMC manages no computer system", ErrBMC, root.Systems.ID)
	default:
		return nil, fmt.Errorf("%w: the BMC manages %d systems (%s): set system to the one this machine is", ErrBMC, len(ids), strings.Join(ids, ", "))
	}
	return r.read(ctx, pick)
}

// read GETs one ComputerSystem.
func (r *redfish) read(ctx context.Context, p string) (*computerSystem, error) {
	var sys computerSystem
	etag, err := r.getJSON(ctx, p, &sys)
	if err != nil {
		return nil, fmt.Errorf("reading system %s: %w", p, err)
	}
	sys.path, sys.etag = p, etag
	return &sys, nil
}

// getJSON GETs p and decodes the answer into v, returning its ETag.
func (r *redfish) getJSON(ctx context.Context, p string, v any) (string, error) {
	resp, err := r.do(ctx, http.MethodGet, p, nil, "")
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(resp.body, v); err != nil {
		return "", fmt.Errorf("%w: GET %s: not the JSON document expected (%v): check that the address is a Redfish service", ErrBMC, p, err)
	}
	return resp.etag, nil
}

type redfishResponse struct {
	status int
	etag   string
	body   []byte
}

// do sends one request to a path on the BMC, with retries.
func (r *redfish) do(ctx context.Context, method, p string, body any, ifMatch string) (*redfishResponse, error) {
	u, err := r.resolve(p)
	if err != nil {
		return nil, err
	}
	var payload []byte
	if body != nil {
		if payload, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("encoding the %s %s body: %w", method, p, err)
		}
	}
	what := method + " " + u.Path
	return withRetry(ctx, r.o, what, func(ctx context.Context) (*redfishResponse, error) {
		return r.once(ctx, method, u, payload, ifMatch)
	})
}

// resolve turns a path the BMC gave (an @odata.id, an action target)
// into a URL on the BMC, refusing one that points elsewhere: the
// credentials go with every request.
func (r *redfish) resolve(p string) (*url.URL, error) {
	ref, err := url.Parse(p)
	if err != nil || ref.Scheme != "" || ref.Host != "" || !strings.HasPrefix(ref.Path, "/redfish/v1") {
		return nil, fmt.Errorf("%w: the BMC gave %q where a /redfish/v1/... path belongs: bty only follows paths on the BMC itself", ErrBMC, p)
	}
	return r.base.ResolveReference(&url.URL{Path: ref.Path, RawQuery: ref.RawQuery}), nil
}

func (r *redfish) once(ctx context.Context, method string, u *url.URL, payload []byte, ifMatch string) (*redfishResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.timeout)
	defer cancel()
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u.Path, err)
	}
	req.SetBasicAuth(r.c.Username, r.c.Password)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("OData-Version", "4.0")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	start := time.Now()
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, r.transportError(ctx, method, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, r.transportError(ctx, method, u, err)
	}
	r.o.log.Debug("BMC request", "method", method, "path", u.Path, "status", resp.StatusCode, "took", time.Since(start))
	if len(data) > maxBody {
		return nil, fmt.Errorf("%w: %s %s answered more than %d bytes: check that the address is a Redfish service", ErrBMC, method, u.Path, maxBody)
	}
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return nil, fmt.Errorf("%w: %s %s on %s: HTTP %d for user %q: check the username and password in the machine's power settings and that the account may control power",
			ErrCredentials, method, u.Path, r.base, code, r.c.Username)
	case code >= 500:
		return nil, &retryable{fmt.Errorf("%w: %s %s on %s: HTTP %d%s: the BMC failed; try again later or reset the BMC", ErrBMC, method, u.Path, r.base, code, redfishMessage(data))}
	case code < 200 || code > 299:
		return nil, fmt.Errorf("%w: %s %s on %s: HTTP %d%s", ErrBMC, method, u.Path, r.base, code, redfishMessage(data))
	}
	return &redfishResponse{status: resp.StatusCode, etag: resp.Header.Get("ETag"), body: data}, nil
}

// transportError names what went wrong below HTTP and what to do.
func (r *redfish) transportError(ctx context.Context, method string, u *url.URL, err error) error {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	switch {
	case errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &hn):
		return fmt.Errorf("%s %s: the BMC's TLS certificate is not trusted (%v): add its CA to the system's trust store, or set insecure to skip the check", method, u.Path, err)
	case ctx.Err() == context.DeadlineExceeded:
		// Not retried: a BMC that does not answer in the timeout
		// would only make the caller wait the timeout again.
		return fmt.Errorf("%w: %s %s: no answer from %s within %s: check the address, that the BMC is powered and reachable from here", ErrUnreachable, method, u.Path, r.base, r.o.timeout)
	case ctx.Err() != nil: // the caller's context ended
		return fmt.Errorf("%s %s on %s: %w", method, u.Path, r.base, ctx.Err())
	}
	return &retryable{fmt.Errorf("%w: %s %s: %s: %v: check the address and that the BMC is reachable from here", ErrUnreachable, method, u.Path, r.base, unwrapURLError(err))}
}

// unwrapURLError drops net/http's "Get \"URL\": " prefix, which repeats
// what the message already says.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redfishMessage returns ": " and the Redfish error message in an error
// answer, bounded, or "" when it has none.
func redfishMessage(body []byte) string {
	var e struct {
		Error struct {
			Message  string `json:"message"`
			Extended []struct {
				Message string `json:"Message"`
			} `json:"@Message.ExtendedInfo"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	msg := e.Error.Message
	if len(e.Error.Extended) > 0 && e.Error.Extended[0].Message != "" {
		msg = e.Error.Extended[0].Message
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		return ""
	}
	return ": " + msg
}
