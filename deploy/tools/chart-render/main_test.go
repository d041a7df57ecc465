package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSetTypesAndPaths(t *testing.T) {
	m := map[string]interface{}{}
	for _, s := range []string{"a.b=3,a.c=true,a.d=null,a.e=007,a.f=x\\,y", "l[1]=z,m[0].n=1", "s={p,2}", "e=a\\.b"} {
		if err := parseSet(s, false, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := parseSet("str=5", true, m); err != nil {
		t.Fatal(err)
	}
	want := map[string]interface{}{
		"a":   map[string]interface{}{"b": int64(3), "c": true, "d": nil, "e": "007", "f": "x,y"},
		"l":   []interface{}{nil, "z"},
		"m":   []interface{}{map[string]interface{}{"n": int64(1)}},
		"s":   []interface{}{"p", int64(2)},
		"e":   "a.b",
		"str": "5",
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %#v\nwant %#v", m, want)
	}
	if err := parseSet("nokey", false, m); err == nil {
		t.Fatal("a pair without = was accepted")
	}
}

func TestCoalesce(t *testing.T) {
	defaults := map[string]interface{}{
		"a": map[string]interface{}{"x": 1.0, "y": 2.0},
		"b": "keep",
		"c": "drop",
	}
	user := map[string]interface{}{"a": map[string]interface{}{"y": int64(5)}, "c": nil}
	got := coalesce(user, defaults)
	want := map[string]interface{}{"a": map[string]interface{}{"x": 1.0, "y": int64(5)}, "b": "keep"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v want %#v", got, want)
	}
}

func TestToYAMLLikeHelm(t *testing.T) {
	v := map[string]interface{}{"b": []interface{}{"x", map[string]interface{}{"k": 1.0}}, "a": "true", "n": 3.0}
	got := toYAML(v)
	want := "a: \"true\"\nb:\n- x\n- k: 1\n\"n\": 3" // yaml.v2 quotes YAML 1.1 booleans such as n, as helm does
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func writeChart(t *testing.T, files map[string]string) string {
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func render(t *testing.T, dir string, user map[string]interface{}, strict bool) ([]Manifest, error) {
	r, err := NewRenderer(dir, user, Options{ReleaseName: "rel", Namespace: "ns", Strict: strict})
	if err != nil {
		return nil, err
	}
	out, err := r.Render()
	if err != nil {
		return nil, err
	}
	return SortManifests(out)
}

func TestRenderIncludeTplRequiredAndOrder(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: \"4.5\"\n",
		"values.yaml": "name: web\nport: 8080\nmsg: \"{{ .Release.Name }}-x\"\n",
		"templates/_h.tpl": `{{- define "demo.labels" -}}app: {{ .Values.name }}
ver: {{ .Chart.AppVersion | quote }}{{- end -}}`,
		"templates/svc.yaml": `apiVersion: v1
kind: Service
metadata:
  name: {{ required "name is required" .Values.name }}
  namespace: {{ .Release.Namespace }}
  labels: {{- include "demo.labels" . | nindent 4 }}
  annotations:
    msg: {{ tpl .Values.msg . }}
    kube: {{ .Capabilities.KubeVersion.Minor | quote }}
    tmpl: {{ .Template.Name }}
spec:
  ports: [{port: {{ int .Values.port }}}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa}
`,
		"templates/a-deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
		"templates/NOTES.txt":     "hello {{ .Release.Name }}",
	})
	ms, err := render(t, dir, map[string]interface{}{}, true)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, m := range ms {
		kinds = append(kinds, m.Kind)
	}
	if strings.Join(kinds, ",") != "ServiceAccount,Service,Deployment" {
		t.Fatalf("order %v", kinds)
	}
	svc := ms[1].Content
	for _, want := range []string{"name: web", "app: web", `ver: "4.5"`, "msg: rel-x", `kube: "31"`, "tmpl: demo/templates/svc.yaml", "port: 8080", "namespace: ns"} {
		if !strings.Contains(svc, want) {
			t.Errorf("%q not in\n%s", want, svc)
		}
	}
	if ms[1].Source != "demo/templates/svc.yaml" {
		t.Errorf("source %q", ms[1].Source)
	}
	if _, err := render(t, dir, map[string]interface{}{"name": ""}, false); err == nil || !strings.Contains(err.Error(), "name is required") {
		t.Fatalf("required: %v", err)
	}
}

func TestStrictMissingKey(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"Chart.yaml":       "apiVersion: v2\nname: demo\nversion: 1.0.0\n",
		"values.yaml":      "a: {}\n",
		"templates/x.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {v: \"{{ .Values.a.missing }}\"}\n",
	})
	ms, err := render(t, dir, map[string]interface{}{}, false)
	if err != nil || !strings.Contains(ms[0].Content, `v: ""`) {
		t.Fatalf("lenient: %v %v", ms, err)
	}
	if _, err := render(t, dir, map[string]interface{}{}, true); err == nil {
		t.Fatal("strict rendering accepted a missing key")
	}
}

func TestBadYAMLNamesTheFile(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"Chart.yaml":         "apiVersion: v2\nname: demo\nversion: 1.0.0\n",
		"templates/bad.yaml": "kind: [unclosed\n",
	})
	if _, err := render(t, dir, map[string]interface{}{}, false); err == nil || !strings.Contains(err.Error(), "demo/templates/bad.yaml") {
		t.Fatalf("got %v", err)
	}
}

func TestKubeVersionConstraint(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"Chart.yaml":       "apiVersion: v2\nname: demo\nversion: 1.0.0\nkubeVersion: \">=1.27.0-0\"\n",
		"templates/x.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
	})
	for kv, ok := range map[string]bool{"v1.31.0": true, "1.27.3": true, "v1.26.5": false, "v1.30.1-eks-123": true} {
		_, err := NewRenderer(dir, map[string]interface{}{}, Options{ReleaseName: "r", Namespace: "n", KubeVersion: kv})
		if (err == nil) != ok {
			t.Errorf("kube version %s: %v", kv, err)
		}
	}
}
