package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/onsi/ginkgo/v2/reporters"
	"golang.org/x/net/html"
)

// The check behind `make check-report`: report.html, as a browser renders it, must show
// every testcase of the run's junit.xml with the verdict JUnit gives it, the failures
// before the families, a headline whose counts agree with junit.xml, and load nothing
// from anywhere. CheckStatic does the same on the file as written, for machines without a
// browser.

// CheckOptions tune CheckHTML; the zero value is ready.
type CheckOptions struct {
	// Browser is the Chromium binary; empty looks "chromium" up on PATH.
	Browser string
	// Screenshot is where the picture of the page goes; empty is report.png beside it.
	Screenshot string
	// MaxHeight caps the screenshot's height in pixels (default 16000): a long page is
	// cut, not shrunk.
	MaxHeight int
	// Timeout bounds each browser call (default 2 minutes).
	Timeout time.Duration
}

// CheckResult says what a check verified.
type CheckResult struct {
	Testcases  int
	Screenshot string
	Width      int
	Height     int
}

// ScreenshotWidth is the browser window's width for the DOM and the screenshot.
const ScreenshotWidth = 1400

// ErrNoBrowser is returned by FindBrowser when no Chromium is installed.
var ErrNoBrowser = errors.New(`no "chromium" on PATH (Debian: apt-get install chromium)`)

// FindBrowser returns the path of the Chromium binary the check runs.
func FindBrowser() (string, error) {
	path, err := exec.LookPath("chromium")
	if err != nil {
		return "", ErrNoBrowser
	}
	return path, nil
}

// CheckHTML renders dir/report.html in headless Chromium, checks the rendered page
// against dir/junit.xml and saves a screenshot of it.
func CheckHTML(ctx context.Context, dir string, o CheckOptions) (CheckResult, error) {
	if o.Browser == "" {
		b, err := FindBrowser()
		if err != nil {
			return CheckResult{}, err
		}
		o.Browser = b
	}
	if o.Screenshot == "" {
		o.Screenshot = filepath.Join(dir, "report.png")
	}
	if o.MaxHeight == 0 {
		o.MaxHeight = 16000
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	cases, raw, err := readReport(dir)
	if err != nil {
		return CheckResult{}, err
	}
	if err := checkSelfContained(raw); err != nil {
		return CheckResult{}, err
	}
	// The browser is given the file's real path: reports/latest is a symbolic link.
	page, err := filepath.EvalSymlinks(filepath.Join(dir, HTMLFile))
	if err != nil {
		return CheckResult{}, err
	}
	if page, err = filepath.Abs(page); err != nil {
		return CheckResult{}, err
	}
	pageURL := (&url.URL{Scheme: "file", Path: page}).String()
	dom, err := runBrowser(ctx, o, "--window-size="+strconv.Itoa(ScreenshotWidth)+",900", "--dump-dom", pageURL)
	if err != nil {
		return CheckResult{}, fmt.Errorf("render %s: %w", page, err)
	}
	if err := checkPage(dom, cases); err != nil {
		return CheckResult{}, fmt.Errorf("%s as rendered by %s: %w", page, o.Browser, err)
	}
	height := min(pageHeight(dom), o.MaxHeight)
	shot, err := filepath.Abs(o.Screenshot)
	if err != nil {
		return CheckResult{}, err
	}
	_ = os.Remove(shot) // so a stale picture cannot pass for a new one
	if _, err := runBrowser(ctx, o, fmt.Sprintf("--window-size=%d,%d", ScreenshotWidth, height), "--screenshot="+shot, pageURL); err != nil {
		return CheckResult{}, fmt.Errorf("screenshot of %s: %w", page, err)
	}
	w, h, err := pngSize(shot)
	if err != nil {
		return CheckResult{}, fmt.Errorf("screenshot of %s: %w", page, err)
	}
	return CheckResult{Testcases: len(cases), Screenshot: shot, Width: w, Height: h}, nil
}

// CheckStatic checks dir/report.html as written, without a browser: the same checks as
// CheckHTML on the page before any script runs (the page is drawn without script).
func CheckStatic(dir string) (CheckResult, error) {
	cases, raw, err := readReport(dir)
	if err != nil {
		return CheckResult{}, err
	}
	if err := checkSelfContained(raw); err != nil {
		return CheckResult{}, err
	}
	if err := checkPage(raw, cases); err != nil {
		return CheckResult{}, fmt.Errorf("%s: %w", filepath.Join(dir, HTMLFile), err)
	}
	return CheckResult{Testcases: len(cases)}, nil
}

func readReport(dir string) ([]reporters.JUnitTestCase, []byte, error) {
	cases, err := readJUnit(filepath.Join(dir, "junit.xml"))
	if err != nil {
		return nil, nil, fmt.Errorf("the run's testcases: %w", err)
	}
	if len(cases) == 0 {
		return nil, nil, fmt.Errorf("%s has no testcases: nothing to check the page against", filepath.Join(dir, "junit.xml"))
	}
	raw, err := os.ReadFile(filepath.Join(dir, HTMLFile))
	if err != nil {
		return nil, nil, err
	}
	return cases, raw, nil
}

// runBrowser runs one headless Chromium call with a fresh profile and returns its stdout.
// Chromium starts helper processes (zygote, renderer): it runs in a process group of its
// own, and on timeout the whole group is killed, so nothing outlives the call.
func runBrowser(ctx context.Context, o CheckOptions, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	profile, err := os.MkdirTemp("", "asm-report-chromium-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(profile)
	cmd := exec.CommandContext(ctx, o.Browser, append([]string{"--headless", "--no-sandbox", "--disable-gpu",
		"--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--user-data-dir=" + profile}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Helpers that kept the output pipes open must not hold Wait forever.
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if cmd.Process != nil {
		// Chromium's helpers normally exit with it; any that did not are in its group.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, fmt.Errorf("%s did not finish within %s and was killed (raise the timeout on a slow machine); its last output: %s",
			o.Browser, o.Timeout, tail(stderr.String()))
	case err != nil:
		return nil, fmt.Errorf("%s %s: %w; its last output: %s", o.Browser, strings.Join(args, " "), err, tail(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// tail is the end of a browser's stderr, where the reason for a failure is.
func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// pageHeight is the laid-out height the page's script wrote on <html>; without it (a
// browser that ran no script), a tall default.
func pageHeight(dom []byte) int {
	doc, err := html.Parse(bytes.NewReader(dom))
	if err == nil {
		for n := range doc.Descendants() {
			if n.Type == html.ElementNode && n.Data == "html" {
				if h, err := strconv.Atoi(attr(n, "data-page-height")); err == nil && h > 0 {
					return h
				}
			}
		}
	}
	return 4000
}

func pngSize(path string) (w, h int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("no screenshot: %w", err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		return 0, 0, fmt.Errorf("%s is not a PNG: %w", path, err)
	}
	return cfg.Width, cfg.Height, nil
}

// pageRow is a testcase as the page shows it.
type pageRow struct {
	testcase, verdictAttr, verdict, name string
}

var headlineRE = regexp.MustCompile(`(\d+) passed, (\d+) failed, (\d+) skipped`)

// checkPage checks a page (as written or as rendered) against junit.xml's testcases.
func checkPage(doc []byte, cases []reporters.JUnitTestCase) error {
	root, err := html.Parse(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("not HTML: %w", err)
	}
	var rows []pageRow
	failureCards := map[string]int{}
	var headline string
	order := map[string]int{} // section id → document position
	i := 0
	for n := range root.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		i++
		if n.Data == "section" && attr(n, "id") != "" {
			order[attr(n, "id")] = i
		}
		if attr(n, "id") == "headline" {
			headline = text(n)
		}
		if tc, ok := hasAttr(n, "data-failure"); ok {
			failureCards[tc]++
		}
		if tc, ok := hasAttr(n, "data-testcase"); ok {
			rows = append(rows, pageRow{testcase: tc, verdictAttr: attr(n, "data-verdict"),
				verdict: text(findClass(n, "verdict")), name: text(findClass(n, "name"))})
		}
	}

	var problems []string
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	onPage := map[string][]pageRow{}
	for _, r := range rows {
		onPage[r.testcase] = append(onPage[r.testcase], r)
	}
	want := map[string][]string{} // testcase → its JUnit statuses (names may repeat)
	var passed, failed, skipped int
	for _, c := range cases {
		want[c.Name] = append(want[c.Name], c.Status)
		switch {
		case c.Status == "passed" && strings.HasPrefix(c.Name, "[It]"):
			passed++
		case isFailure(c.Status):
			failed++
			if failureCards[c.Name] == 0 {
				problem("failed testcase %q has no entry under \"What failed\"", c.Name)
			}
		case c.Status == "skipped" && c.Skipped != nil && c.Skipped.Message != "skipped":
			skipped++ // skipped with a reason; without one it was not selected
		}
	}
	for name, statuses := range want {
		got := onPage[name]
		if len(got) != len(statuses) {
			problem("testcase %q (%s in junit.xml) appears %d times on the page, want %d", name, strings.Join(statuses, ", "), len(got), len(statuses))
			continue
		}
		var verdicts []string
		for _, r := range got {
			verdicts = append(verdicts, r.verdict)
			if r.verdict != r.verdictAttr {
				problem("testcase %q shows %q but is marked %q", name, r.verdict, r.verdictAttr)
			}
			if r.name == "" || !strings.Contains(name, r.name) {
				problem("testcase %q is shown under the name %q", name, r.name)
			}
		}
		slices.Sort(verdicts)
		statuses = slices.Sorted(slices.Values(statuses))
		if !slices.Equal(verdicts, statuses) {
			problem("testcase %q: the page shows %s, junit.xml says %s", name, strings.Join(verdicts, ", "), strings.Join(statuses, ", "))
		}
	}
	for name := range onPage {
		if want[name] == nil {
			problem("the page shows %q, which is not a testcase of junit.xml", name)
		}
	}
	if m := headlineRE.FindStringSubmatch(headline); m == nil {
		problem("no headline \"N passed, N failed, N skipped\" (got %q)", headline)
	} else if m[1] != strconv.Itoa(passed) || m[2] != strconv.Itoa(failed) || m[3] != strconv.Itoa(skipped) {
		problem("the headline says %q; junit.xml has %d passed, %d failed, %d skipped", m[0], passed, failed, skipped)
	}
	if order["failures"] == 0 || order["families"] == 0 || order["failures"] > order["families"] {
		problem("the failures section must come before the families")
	}
	if len(problems) > 0 {
		if len(problems) > 12 {
			problems = append(problems[:12], fmt.Sprintf("... and %d more", len(problems)-12))
		}
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// checkSelfContained fails for anything in the page that a browser would fetch: scripts,
// stylesheets, fonts, images or frames by URL (data: URLs and #fragments are inline).
func checkSelfContained(doc []byte) error {
	root, err := html.Parse(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("not HTML: %w", err)
	}
	var found []string
	inline := func(ref string) bool {
		ref = strings.Trim(strings.TrimSpace(ref), `"'`)
		return ref == "" || strings.HasPrefix(ref, "#") || strings.HasPrefix(strings.ToLower(ref), "data:")
	}
	cssRefs := func(where, css string) {
		lower := strings.ToLower(css)
		if strings.Contains(lower, "@import") {
			found = append(found, where+" has an @import")
		}
		for rest := lower; ; {
			i := strings.Index(rest, "url(")
			if i < 0 {
				break
			}
			rest = rest[i+4:]
			if end := strings.Index(rest, ")"); end >= 0 && !inline(rest[:end]) {
				found = append(found, fmt.Sprintf("%s loads url(%s)", where, rest[:end]))
			}
		}
	}
	for n := range root.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		switch n.Data {
		case "link", "base":
			found = append(found, fmt.Sprintf("<%s href=%q>", n.Data, attr(n, "href")))
		case "meta":
			if strings.EqualFold(attr(n, "http-equiv"), "refresh") {
				found = append(found, "<meta http-equiv=refresh>")
			}
		case "style":
			cssRefs("<style>", text(n))
		}
		for _, a := range n.Attr {
			switch a.Key {
			case "src", "srcset", "data", "poster", "href", "action", "formaction":
				// <a href> is a link the reader may follow, not something the page loads.
				if !(n.Data == "a" && a.Key == "href") && !inline(a.Val) {
					found = append(found, fmt.Sprintf("<%s %s=%q>", n.Data, a.Key, a.Val))
				}
			case "style":
				cssRefs(fmt.Sprintf("<%s style>", n.Data), a.Val)
			}
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("report.html must load nothing, but it refers to: %s", strings.Join(found, "; "))
	}
	return nil
}

func attr(n *html.Node, key string) string {
	v, _ := hasAttr(n, key)
	return v
}

func hasAttr(n *html.Node, key string) (string, bool) {
	if n == nil {
		return "", false
	}
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

// findClass is the first element under n with class c.
func findClass(n *html.Node, c string) *html.Node {
	for d := range n.Descendants() {
		if d.Type == html.ElementNode && slices.Contains(strings.Fields(attr(d, "class")), c) {
			return d
		}
	}
	return nil
}

// text is an element's text with white space collapsed, as a reader sees it.
func text(n *html.Node) string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}
