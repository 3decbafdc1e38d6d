package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// Login exchanges the admin password for a session and makes the client
// use its token. A wrong password is an *APIError with status 401.
func (c *Client) Login(ctx context.Context, password string) (api.Session, error) {
	var s api.Session
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("auth", "login"),
		body: api.LoginRequest{Password: password}}, &s)
	if err != nil {
		return api.Session{}, err
	}
	if s.Token == "" {
		return api.Session{}, fmt.Errorf("%s answered the login without a token (is it a bty-web server?)", c.Server())
	}
	c.token = s.Token
	return s, nil
}

// Logout revokes the client's session token on the server.
func (c *Client) Logout(ctx context.Context) error {
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("auth", "logout"), auth: true}, nil)
	return err
}

// RevokeAll revokes every session (this one too) and returns how many.
func (c *Client) RevokeAll(ctx context.Context) (int, error) {
	var out api.Revoked
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("auth", "revoke-all"), auth: true}, &out)
	return out.Revoked, err
}

// Version asks the server what it is (open route).
func (c *Client) Version(ctx context.Context) (api.Version, error) {
	var v api.Version
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("version")}, &v)
	return v, err
}

// machinesPage is how many machines Machines asks for per request
// (bty-web's GET /machines answers at most 10,000); Client.machinesPage
// overrides it (tests).
const machinesPage = 5000

// Machines lists every machine, by MAC. bty-web answers GET /machines a
// page at a time, with the next page in a Link header (rel="next", in
// MAC order an after=MAC cursor: a machine added or deleted meanwhile
// neither repeats nor hides another); Machines follows the pages to the
// end. A server from before pages answers everything at once, without a
// Link.
func (c *Client) Machines(ctx context.Context) ([]api.Machine, error) {
	return c.MachinesMatching(ctx, "")
}

// MachinesMatching is Machines for the machines a label selector picks
// ("": all), filtered by the server.
func (c *Client) MachinesMatching(ctx context.Context, selector string) ([]api.Machine, error) {
	ms := []api.Machine{}
	page := machinesPage
	if c.machinesPage > 0 {
		page = c.machinesPage
	}
	u := c.endpoint("machines") + "?limit=" + strconv.Itoa(page)
	if selector != "" {
		u += "&selector=" + url.QueryEscape(selector)
	}
	seen := map[string]bool{}
	for u != "" {
		var page []api.Machine
		var h http.Header
		if _, err := c.do(ctx, request{method: http.MethodGet, url: u, auth: true, respHeader: &h}, &page); err != nil {
			return nil, err
		}
		ms = append(ms, page...)
		next, err := nextLink(u, h)
		if err != nil {
			return nil, err
		}
		if next != "" && (len(page) == 0 || seen[next]) {
			return nil, fmt.Errorf("listing machines on %s: the server's next page (%s) goes nowhere", c.Server(), next)
		}
		seen[next] = true
		u = next
	}
	return ms, nil
}

// nextLink is the absolute URL of the Link header's rel="next" target
// (RFC 8288), resolved against the request's URL u; "" when there is
// none.
func nextLink(u string, h http.Header) (string, error) {
	for _, v := range h.Values("Link") {
		for _, link := range strings.Split(v, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(link), ";")
			target = strings.TrimSpace(target)
			if !ok || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
				continue
			}
			for _, p := range strings.Split(params, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				if !strings.EqualFold(k, "rel") || !slices.Contains(strings.Fields(strings.ToLower(strings.Trim(val, `"`))), "next") {
					continue
				}
				base, err := url.Parse(u)
				if err != nil {
					return "", err
				}
				ref, err := url.Parse(target[1 : len(target)-1])
				if err != nil {
					return "", fmt.Errorf("the server's Link header %q: %w", v, err)
				}
				return base.ResolveReference(ref).String(), nil
			}
		}
	}
	return "", nil
}

// api.Machine returns one machine; an unknown MAC is a 404 *APIError. The
// server accepts any case with ':' or '-'.
func (c *Client) Machine(ctx context.Context, mac fleet.MAC) (api.Machine, error) {
	var m api.Machine
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("machines", mac.String()), auth: true}, &m)
	return m, err
}

// PutMachine creates or updates a machine; created says which.
func (c *Client) PutMachine(ctx context.Context, mac fleet.MAC, u api.MachineUpdate) (m api.Machine, created bool, err error) {
	code, err := c.do(ctx, request{method: http.MethodPut, url: c.endpoint("machines", mac.String()), body: u, auth: true}, &m)
	return m, code == http.StatusCreated, err
}

// Power runs a power action (on, off, cycle, status) through the
// machine's BMC and returns the state it reported.
func (c *Client) Power(ctx context.Context, mac fleet.MAC, action string) (api.PowerResult, error) {
	var res api.PowerResult
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("machines", mac.String(), "power"),
		body: api.PowerRequest{Action: action}, auth: true}, &res)
	return res, err
}

// DeleteMachine deletes a machine; an unknown MAC is a 404 *APIError.
func (c *Client) DeleteMachine(ctx context.Context, mac fleet.MAC) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, url: c.endpoint("machines", mac.String()), auth: true}, nil)
	return err
}

// CycleHeader carries the flash cycle's token (the bty.cycle= kernel
// parameter of the live env's boot script) on the live env's calls back:
// the server accepts them only with the token of the machine's open
// cycle, from the address of the PXE contact that opened it.
const CycleHeader = "X-Bty-Cycle"

func cycleHeader(cycle string) http.Header { return http.Header{CycleHeader: {cycle}} }

// PXEDone is the live env's signal that it flashed the machine (open
// route, in the flash cycle whose token is cycle); the server records
// last_flashed_at. A refused report is a 403 *APIError.
//
// totals are the flash's figures (image, sha256, bytes written, total,
// rate) for the flash history; the server takes a done without them.
func (c *Client) PXEDone(ctx context.Context, mac fleet.MAC, cycle string, totals fleet.Progress) error {
	var st api.ReportStatus
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("pxe", mac.String(), "done"), header: cycleHeader(cycle),
		body: totals}, &st)
	return err
}

// PXEProgress reports a running flash's progress (open route, in the
// flash cycle whose token is cycle): the first report marks the image
// fetch in the flash history; the figures show on the machine's page.
func (c *Client) PXEProgress(ctx context.Context, mac fleet.MAC, cycle string, p fleet.Progress) error {
	var st api.ReportStatus
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("pxe", mac.String(), "progress"), header: cycleHeader(cycle),
		body: p}, &st)
	return err
}

// PXEFailed reports that the live env could not flash the machine
// (open route, like done); the reason shows on the machine's record.
func (c *Client) PXEFailed(ctx context.Context, mac fleet.MAC, cycle, reason string) error {
	var st api.ReportStatus
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("pxe", mac.String(), "failed"),
		body: api.FailureReport{Reason: reason}, header: cycleHeader(cycle)}, &st)
	return err
}

// PXESeed fetches the machine's cloud-init seed (open routes GET
// /pxe/{mac}/user-data and meta-data), which the server releases once
// per flash cycle, to the call carrying the cycle's token from the
// address of the PXE contact that opened it. userData is nil when the
// record has none (a 404); metaData is the record's, or one the server
// makes. A refused call is a 403 *APIError.
func (c *Client) PXESeed(ctx context.Context, mac fleet.MAC, cycle string) (userData, metaData []byte, err error) {
	get := func(what string) ([]byte, error) {
		var b []byte
		_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("pxe", mac.String(), what),
			text: &b, textLimit: fleet.MaxSeedBytes, header: cycleHeader(cycle)}, nil)
		if IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("fetching %s: %w", what, err)
		}
		return b, nil
	}
	if userData, err = get("user-data"); err != nil || userData == nil {
		return nil, nil, err
	}
	if metaData, err = get("meta-data"); err != nil {
		return nil, nil, err
	}
	return userData, metaData, nil
}

// Images lists the server's image catalog (open route).
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	var out []api.Image
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("images")}, &out)
	if out == nil && err == nil {
		out = []api.Image{}
	}
	return out, err
}

// ImageURL is where an image's bytes are served (GET, with Range).
func (c *Client) ImageURL(name string) string { return c.endpoint("images", name) }

// BootURL is where a live-env artifact is served.
func (c *Client) BootURL(name string) string { return c.endpoint("boot", name) }

// UploadOptions tune an upload.
type UploadOptions struct {
	// SHA256 is the expected hex digest of the bytes; the server refuses
	// the upload (and keeps nothing) when they differ.
	SHA256 string
	// Progress, when set, is called as bytes are sent, from the
	// transport's goroutine, with the count so far and the total (-1
	// when unknown). It must be cheap; throttle drawing yourself.
	Progress func(sent, total int64)
}

// UploadImage stores body (size bytes, -1 unknown) as the image name.
// The server checks the bytes' format against the name's suffix and
// the optional sha256. replaced says whether an image of that name was
// overwritten.
func (c *Client) UploadImage(ctx context.Context, name string, body io.Reader, size int64, opt UploadOptions) (img api.Image, replaced bool, err error) {
	code, err := c.upload(ctx, c.endpoint("images", name), body, size, opt, &img)
	return img, code == http.StatusOK, err
}

// BootFiles lists the live-env artifacts (open route): the required
// ones, present or not, and any other file in the boot directory.
func (c *Client) BootFiles(ctx context.Context) ([]api.BootFile, error) {
	var out []api.BootFile
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("boot")}, &out)
	if out == nil && err == nil {
		out = []api.BootFile{}
	}
	return out, err
}

// UploadBoot stores body as the live-env artifact name.
func (c *Client) UploadBoot(ctx context.Context, name string, body io.Reader, size int64, opt UploadOptions) (b api.BootUpload, replaced bool, err error) {
	code, err := c.upload(ctx, c.endpoint("boot", name), body, size, opt, &b)
	return b, code == http.StatusOK, err
}

func (c *Client) upload(ctx context.Context, u string, body io.Reader, size int64, opt UploadOptions, out any) (int, error) {
	if body == nil {
		return 0, errors.New("upload: nil body")
	}
	h := http.Header{}
	if s := strings.TrimSpace(opt.SHA256); s != "" {
		h.Set("X-Checksum-Sha256", strings.ToLower(s))
	}
	if opt.Progress != nil {
		body = &progressReader{r: body, total: size, fn: opt.Progress}
	}
	// The transport closes a body that is an io.Closer; the caller owns
	// its file, so hide Close.
	body = struct{ io.Reader }{body}
	return c.do(ctx, request{method: http.MethodPut, url: u, raw: body, size: size, header: h, auth: true}, out)
}

// progressReader reports the bytes read through it.
type progressReader struct {
	r     io.Reader
	n     atomic.Int64
	total int64
	fn    func(sent, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.fn(p.n.Add(int64(n)), p.total)
	}
	return n, err
}

// api.Settings returns the server's settings (proxy-DHCP) and interfaces.
func (c *Client) Settings(ctx context.Context) (api.Settings, error) {
	var s api.Settings
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("settings"), auth: true}, &s)
	return s, err
}

// PutSettings changes settings; the server applies them live and
// refuses (keeping the old ones) what it cannot apply.
func (c *Client) PutSettings(ctx context.Context, u api.SettingsUpdate) (api.Settings, error) {
	var s api.Settings
	_, err := c.do(ctx, request{method: http.MethodPut, url: c.endpoint("settings"), body: u, auth: true}, &s)
	return s, err
}

// PXEUploadRun uploads the log of an offline cijoe run on the flashed
// disk (open route, in the flash cycle whose token is cycle, before
// done): it becomes one of the machine's runs.
func (c *Client) PXEUploadRun(ctx context.Context, mac fleet.MAC, cycle, workflow string, exit int, log []byte) error {
	var st api.ReportStatus
	u := c.endpoint("pxe", mac.String(), "runs") + "?" + url.Values{"workflow": {workflow}, "exit": {strconv.Itoa(exit)}}.Encode()
	_, err := c.do(ctx, request{method: http.MethodPost, url: u, header: cycleHeader(cycle),
		raw: bytes.NewReader(log), size: int64(len(log))}, &st)
	return err
}
