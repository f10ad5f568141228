package leftovers

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aks-istio-conformance/conformance/harness/leftovers/leftoverstest"
)

// fakeProc lays out one /proc/<pid> entry.
type fakeProc struct {
	pid     int
	exe     string
	args    []string
	env     []string
	cwd     string
	state   string // "S" unless set
	started uint64
}

func writeProc(t *testing.T, root string, p fakeProc) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(p.pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	state := p.state
	if state == "" {
		state = "S"
	}
	// Fields 3..22 of /proc/<pid>/stat; comm with a space and a ')' as real ones can have.
	fields := []string{state, "1", strconv.Itoa(p.pid)}
	for len(fields) < 19 {
		fields = append(fields, "0")
	}
	fields = append(fields, strconv.FormatUint(p.started, 10), "0", "0")
	stat := strconv.Itoa(p.pid) + " (odd) name) " + strings.Join(fields, " ") + "\n"
	files := map[string]string{"stat": stat, "cmdline": strings.Join(p.args, "\x00"), "environ": strings.Join(p.env, "\x00")}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(p.exe, filepath.Join(dir, "exe")); err != nil {
		t.Fatal(err)
	}
	cwd := p.cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := os.Symlink(cwd, filepath.Join(dir, "cwd")); err != nil {
		t.Fatal(err)
	}
}

func TestFindTellsComponentsOfTheDirectoryFromEverythingElse(t *testing.T) {
	proc := t.TempDir()
	bin := "/cache/bin"
	run := "/work/reports/up"
	for _, p := range []fakeProc{
		{pid: 101, exe: bin + "/etcd-3.6.5/etcd", args: []string{bin + "/etcd-3.6.5/etcd", "--data-dir=" + run + "/etcd"}, started: 7},
		{pid: 102, exe: bin + "/istio-1.28.3/pilot-discovery (deleted)", args: []string{"pilot-discovery", "discovery"}, env: []string{"KUBECONFIG=" + run + "/kubeconfig"}},
		{pid: 103, exe: bin + "/kwok-0.8.0/kwok", cwd: run},
		{pid: 104, exe: "/tmp/go-build1/b001/conformance.test", args: []string{"conformance.test", "-reports-dir=" + run}},
		// Not this directory's: another run with the same binaries, a sibling directory, a
		// shell sitting in the directory, a component that already exited (a zombie).
		{pid: 201, exe: bin + "/etcd-3.6.5/etcd", args: []string{"etcd", "--data-dir=/work/reports/other/etcd"}},
		{pid: 202, exe: bin + "/etcd-3.6.5/etcd", args: []string{"etcd", "--data-dir=" + run + "2/etcd"}},
		{pid: 203, exe: "/usr/bin/bash", cwd: run},
		{pid: 204, exe: bin + "/etcd-3.6.5/etcd", args: []string{"etcd", "--data-dir=" + run + "/etcd"}, state: "Z"},
	} {
		writeProc(t, proc, p)
	}

	found, err := find(proc, run, bin)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range found {
		pids = append(pids, p.PID)
	}
	if want := []int{101, 102, 103, 104}; !equal(pids, want) {
		t.Fatalf("found %v, want %v: %v", pids, want, found)
	}
	if found[0].Start != 7 || !strings.Contains(found[0].Why, "arguments") {
		t.Errorf("etcd: %+v, want start 7 and the arguments as the reason", found[0])
	}
	if found[1].Exe != bin+"/istio-1.28.3/pilot-discovery" || !strings.Contains(found[1].Why, "environment") {
		t.Errorf("istiod of a since rebuilt binary: %+v, want its path without (deleted), tied by its environment", found[1])
	}
	if !strings.Contains(found[2].Why, "working directory") || !strings.Contains(found[3].Why, "test binary") {
		t.Errorf("kwok %q, suite %q: want the working directory and the test binary named", found[2].Why, found[3].Why)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMentionsMatchesWholePathsOnly(t *testing.T) {
	for s, want := range map[string]bool{
		"/r/up":               true,
		"--cert-dir=/r/up/c":  true,
		"PATH=/r/up:/usr/bin": true,
		"/r/up2/etcd":         false,
		"/r/upx /r/up/etcd":   true,
		"/x/r/u":              false,
	} {
		if got := mentions(s, "/r/up"); got != want {
			t.Errorf("mentions(%q, /r/up) = %v, want %v", s, got, want)
		}
	}
}

// A real process, started the way the harness starts components (its own process group),
// is found through /proc, and Stop ends it.
func TestFindAndStopARealComponent(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "bin")
	exe := filepath.Join(bin, "etcd-0.0.0", "etcd")
	run := t.TempDir()
	cmd, exited := leftoverstest.StartComponent(t, exe, []string{"ASM_WORK_DIR=" + run})

	found, err := Find(run, bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].PID != cmd.Process.Pid || found[0].Exe != exe {
		t.Fatalf("found %v, want only pid %d running %s", found, cmd.Process.Pid, exe)
	}
	if !OwnedBy(cmd.Process.Pid, run) || OwnedBy(cmd.Process.Pid, t.TempDir()) {
		t.Error("OwnedBy: want true for its directory only")
	}
	if err := Stop(found[0], 5*time.Second); err != nil {
		t.Fatal(err)
	}
	<-exited
	if Alive(found[0]) {
		t.Errorf("%v still alive after Stop", found[0])
	}
	if left, _ := Find(run, bin); len(left) != 0 {
		t.Errorf("found %v after Stop, want nothing", left)
	}
}
