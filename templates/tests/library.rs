//! The registry's settings (strict, no escaping), the helpers, error messages, and loading
//! templates, partials and forms from directories.

use std::path::Path;

use serde_json::{Map, Value, json};
use tenet_templates::{Error, ErrorKind, FormOptions, Library};

fn lib(templates: &[(&str, &str)]) -> Library {
    let mut l = Library::empty();
    for (name, text) in templates {
        l.add_template(name, text, None, "test");
    }
    l
}

fn render(text: &str, data: Value) -> Result<String, Error> {
    lib(&[("t", text)]).render("t", &data)
}

fn ok(text: &str, data: Value) -> String {
    render(text, data).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn err(text: &str, data: Value) -> String {
    render(text, data)
        .map(|out| panic!("{text} rendered {out:?} instead of failing"))
        .unwrap_err()
        .to_string()
}

#[test]
fn config_text_is_not_html_escaped() {
    assert_eq!(
        ok("x={{v}}", json!({"v": "a & <b> \"c\""})),
        "x=a & <b> \"c\""
    );
}

#[test]
fn a_missing_variable_is_an_error_naming_template_line_and_variable() {
    let e = render("a\nb {{nope}}\n", json!({})).unwrap_err();
    assert_eq!(
        e,
        Error::MissingVariable {
            template: "t".into(),
            origin: "test/t/template.hbs".into(),
            line: Some(2),
            column: Some(3),
            variable: "nope".into(),
        }
    );
    assert_eq!(e.kind(), ErrorKind::Template);
    assert_eq!(
        e.to_string(),
        "template t (test/t/template.hbs) line 2, column 3: missing variable `nope`"
    );
    // Nested paths name the whole path.
    assert!(err("{{a.b}}", json!({"a": {}})).contains("missing variable `a.b`"));
}

/// Handlebars' strict mode lets `{{#if missing}}` take the else branch: ours fails.
#[test]
fn missing_variables_in_if_unless_and_helper_arguments_are_errors() {
    for text in [
        "{{#if nope}}y{{else}}n{{/if}}",
        "{{#unless nope}}y{{/unless}}",
        "{{#if a.nope}}y{{/if}}",
        "{{#if x}}y{{else if nope}}z{{/if}}",
        "{{pad nope 2}}",
        "{{add 1 (mul nope 2)}}",
        "{{#if (eq nope 1)}}y{{/if}}",
        "{{#each (words nope)}}{{/each}}",
        "{{#times nope}}{{/times}}",
        "{{json nope}}",
        "{{#if (and x nope)}}y{{/if}}",
    ] {
        let e = err(text, json!({"x": false, "a": {}}));
        assert!(
            e.contains("missing variable") && e.contains("nope"),
            "{text}: {e}"
        );
    }
    // A present but false value is fine, and the line of the `if` is given.
    assert_eq!(ok("{{#if x}}y{{else}}n{{/if}}", json!({"x": 0})), "n");
    assert!(err("\n\n{{#if nope}}{{/if}}", json!({})).contains("line 3"));
}

#[test]
fn defined_and_default_test_for_missing_variables() {
    let t = "{{#if (defined pw)}}pw={{pw}}{{else}}no pw{{/if}} {{default port 22}}";
    assert_eq!(ok(t, json!({})), "no pw 22");
    assert_eq!(ok(t, json!({"pw": "x", "port": 2222})), "pw=x 2222");
    assert_eq!(ok(t, json!({"pw": null})), "no pw 22");
}

#[test]
fn arithmetic_and_padding() {
    let d = json!({"n": 7, "s": "08", "neg": -7});
    assert_eq!(
        ok(
            "{{pad n 2}} {{pad n 4}} {{pad 123 2}} {{pad neg 3}} {{pad s 3}}",
            d.clone()
        ),
        "07 0007 123 -07 008"
    );
    assert_eq!(
        ok(
            "{{add n 1}} {{add 1 2 3}} {{sub 1 n}} {{mul n 3 2}} {{div 7 2}} {{div neg 2}} {{mod 7 3}} {{mod neg 3}} {{to_int s}}",
            d.clone()
        ),
        "8 6 -6 42 3 -3 1 -1 8"
    );
    assert!(err("{{div n 0}}", d.clone()).contains("helper div: division of 7 by zero"));
    assert!(err("{{mod n 0}}", d.clone()).contains("modulo zero"));
    assert!(err("{{add 9223372036854775807 1}}", d.clone()).contains("integer overflow"));
    assert!(
        err("{{add n \"x\"}}", d.clone()).contains("expected an integer, got the string \"x\"")
    );
    assert!(err("{{add n 1.5}}", d.clone()).contains("expected an integer"));
    assert!(err("{{sub n}}", d).contains("helper sub: takes 2 argument(s), got 1"));
}

#[test]
fn comparisons_and_logic() {
    let d = json!({"a": 2, "b": "10", "s": "abc"});
    assert_eq!(
        ok(
            "{{lt a b}} {{gt a b}} {{le a 2}} {{ge a 3}} {{lte a 2}} {{gte a 2}} {{eq a 2}} {{ne s \"abc\"}} {{lt s \"abd\"}}",
            d.clone()
        ),
        "true false true false true true true false true"
    );
    assert_eq!(
        ok(
            "{{and a s}} {{or 0 \"\"}} {{not 0}} {{#if (and (gt a 1) (lt a 3))}}in{{/if}}",
            d.clone()
        ),
        "true false true in"
    );
    assert!(err("{{lt a s}}", d).contains("cannot compare"));
}

#[test]
fn ranges_and_times() {
    let d = json!({"n": 3});
    assert_eq!(ok("{{json (range n)}}", d.clone()), "[0,1,2]");
    assert_eq!(ok("{{json (range 1 (add n 1))}}", d.clone()), "[1,2,3]");
    assert_eq!(ok("{{json (range 10 0 -3)}}", d.clone()), "[10,7,4,1]");
    assert_eq!(ok("{{json (range 5 1)}}", d.clone()), "[]");
    assert_eq!(
        ok(
            "{{#each (range 1 4)}}{{this}}{{#unless @last}},{{/unless}}{{/each}}",
            d.clone()
        ),
        "1,2,3"
    );
    assert_eq!(
        ok(
            "{{#times n}}[{{this}}/{{@index}}/{{@number}}{{#if @first}} first{{/if}}{{#if @last}} last{{/if}}]{{/times}}",
            d.clone()
        ),
        "[0/0/1 first][1/1/2][2/2/3 last]"
    );
    assert_eq!(
        ok(
            "{{#times 2 as |i|}}{{i}}{{/times}}{{#times 0}}x{{else}}none{{/times}}",
            d.clone()
        ),
        "01none"
    );
    assert!(err("{{range 1 5 0}}", d.clone()).contains("the step is 0"));
    assert!(err("{{range 0 100000000}}", d).contains("limit"));
}

#[test]
fn strings_and_lists() {
    let d = json!({"nodes": "n1  n2\tn3", "csv": "a,b,,c", "l": ["x", "y", "x", 3]});
    assert_eq!(
        ok(
            "{{json (words nodes)}} {{json (split csv \",\")}} {{join (words nodes) \"+\"}} {{join l \"\"}}",
            d.clone()
        ),
        r#"["n1","n2","n3"] ["a","b","","c"] n1+n2+n3 xyx3"#
    );
    assert_eq!(
        ok(
            "{{first (words nodes)}} {{last l}} {{nth l 1}} {{nth l -1}} {{len l}} {{len csv}} {{json (unique l)}}",
            d.clone()
        ),
        r#"n1 3 y 3 4 6 ["x","y",3]"#
    );
    assert_eq!(
        ok(
            "{{upper \"ab\"}} {{lower \"AB\"}} [{{trim \" a \"}}] {{trim_prefix \"pod01\" \"pod\"}} {{trim_suffix \"a.conf\" \".conf\"}} {{replace \"a-b-c\" \"-\" \"_\"}} {{concat \"a\" 1 true}} {{digits \"spd03b1\"}}",
            d.clone()
        ),
        "AB ab [a] 01 a a_b_c a1true 031"
    );
    assert!(err("{{nth l 4}}", d.clone()).contains("index 4 is out of range for a list of 4"));
    assert!(err("{{first (words \"\")}}", d.clone()).contains("the list is empty"));
    assert!(err("{{join nodes \",\"}}", d).contains("expected a list"));
}

#[test]
fn ipv4_arithmetic() {
    let d = json!({"net": "10.0.0.0/24"});
    assert_eq!(
        ok(
            "{{ipv4_host net 1}} {{ipv4_host net 254}} {{ipv4_add \"10.0.0.250\" 10}} {{ipv4_add \"10.0.1.0\" -1}} {{ipv4_network \"192.168.7.9/22\"}} {{ipv4_netmask \"10.1.2.3/20\"}} {{ipv4_broadcast net}} {{ipv4_host \"10.0.0.4/31\" 1}}",
            d.clone()
        ),
        "10.0.0.1 10.0.0.254 10.0.1.4 10.0.0.255 192.168.4.0 255.255.240.0 10.0.0.255 10.0.0.5"
    );
    assert!(
        err("{{ipv4_host net 255}}", d.clone())
            .contains("host 255 is outside 10.0.0.0/24 (hosts 1 to 254)")
    );
    assert!(err("{{ipv4_host net 0}}", d.clone()).contains("outside"));
    assert!(
        err("{{ipv4_add \"255.255.255.255\" 1}}", d.clone())
            .contains("outside the IPv4 address space")
    );
    assert!(err("{{ipv4_add \"10.0.0\" 1}}", d.clone()).contains("is not an IPv4 address"));
    assert!(err("{{ipv4_netmask \"10.0.0.0/33\"}}", d).contains("not an IPv4 network"));
}

#[test]
fn fail_refuses_with_the_template_message() {
    let e = err(
        "a\n{{#if (gt n 3)}}{{fail \"n is \" n \", at most 3\"}}{{/if}}",
        json!({"n": 5}),
    );
    assert_eq!(
        e,
        "template t (test/t/template.hbs) line 2, column 17: n is 5, at most 3"
    );
    assert_eq!(
        ok("{{#if (gt n 3)}}{{fail \"no\"}}{{/if}}ok", json!({"n": 1})),
        "ok"
    );
}

#[test]
fn base64_and_json() {
    let d = json!({"o": {"b": [1, "x"], "a": null}, "s": "héllo\n"});
    assert_eq!(ok("{{base64 s}}", d.clone()), "aMOpbGxvCg==");
    assert_eq!(ok("{{base64_decode (base64 s)}}", d.clone()), "héllo\n");
    assert_eq!(ok("{{json o}}", d.clone()), r#"{"b":[1,"x"],"a":null}"#);
    assert_eq!(
        ok("{{json o pretty=true}}", d.clone()),
        "{\n  \"b\": [\n    1,\n    \"x\"\n  ],\n  \"a\": null\n}"
    );
    assert!(err("{{base64_decode \"!!\"}}", d).contains("not base64"));
}

#[test]
fn standalone_block_lines_leave_no_blank_lines() {
    let t = "[s]\n{{#each (words nodes)}}\nk@{{this}} = 1\n{{/each}}\n{{!-- note --}}\nend\n";
    assert_eq!(
        ok(t, json!({"nodes": "a b"})),
        "[s]\nk@a = 1\nk@b = 1\nend\n"
    );
}

#[test]
fn unknown_templates_list_the_known_ones() {
    let l = lib(&[("a", "x"), ("b/c", "y")]);
    let e = l.render("nope", &json!({})).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        "unknown template \"nope\"; known templates: a, b/c"
    );
    let e = l
        .render_form("a", &Map::new(), FormOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("is not a form"), "{e}");
}

#[test]
fn inline_templates_name_their_label() {
    let l = Library::empty();
    assert_eq!(
        l.render_inline("rule path", "/{{svc}}/x", &json!({"svc": "s"}))
            .unwrap(),
        "/s/x"
    );
    assert_eq!(
        l.render_inline("rule path", "/plain", &json!({})).unwrap(),
        "/plain"
    );
    let e = l
        .render_inline("rule path", "/{{nope}}", &json!({}))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("template rule path") && e.contains("`nope`"),
        "{e}"
    );
    let e = l.check_inline("rule path", "/{{#if x}}").unwrap_err();
    assert!(matches!(e, Error::Syntax { .. }), "{e}");
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tenet-templates-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn directories_hold_templates_partials_and_forms() {
    let dir = tempdir();
    write(&dir, "hello/template.hbs", "{{> hello/greet}} {{> sig}}\n");
    write(&dir, "hello/greet.hbs", "hello {{name}}");
    write(&dir, "sig.hbs", "-- {{@root.from}}");
    write(
        &dir,
        "hello/form.toml",
        "[[input]]\nname = \"name\"\ntype = \"string\"\nmandatory = true\n\n[[input]]\nname = \"from\"\ntype = \"string\"\ndefault = \"tenet\"\n",
    );
    write(&dir, "nested/deep/template.hbs", "deep");
    write(&dir, ".hidden/template.hbs", "{{#if}}");
    write(&dir, "notes.txt", "ignored");
    let l = Library::load(std::slice::from_ref(&dir)).unwrap();
    assert!(l.problems().is_empty(), "{:?}", l.problems());
    assert!(l.has("hello") && l.has("nested/deep") && l.has("spd-service"));
    assert!(!l.names().contains(&"hello/greet".to_string()));
    let mut inputs = Map::new();
    inputs.insert("name".into(), json!("bob"));
    let out = l
        .render_form("hello", &inputs, FormOptions::default())
        .unwrap();
    assert_eq!(out.text, "hello bob -- tenet\n");
    assert_eq!(out.service, None);

    // A directory's template replaces the shipped one of the same name.
    write(&dir, "spd-service/template.hbs", "mine");
    let l = Library::load(std::slice::from_ref(&dir)).unwrap();
    assert_eq!(l.render("spd-service", &json!({})).unwrap(), "mine");
    std::fs::remove_dir_all(&dir).unwrap();

    let e = Library::load(&[dir.join("missing")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
}

#[test]
fn broken_files_are_reported_when_used_naming_file_and_line() {
    let dir = tempdir();
    write(&dir, "bad/template.hbs", "ok\n{{#if x}}\nno end\n");
    write(&dir, "good/template.hbs", "{{> good/part}}");
    write(&dir, "good/part.hbs", "a\n\n{{#each}}x{{/if}}");
    write(&dir, "badform/template.hbs", "x");
    write(
        &dir,
        "badform/form.toml",
        "[[input]]\nname = \"a\"\ntype = \"string\"\nmandatry = true\n",
    );
    write(&dir, "badtype/template.hbs", "x");
    write(
        &dir,
        "badtype/form.toml",
        "[[input]]\nname = \"a\"\ntype = \"integer\"\ndefault = \"x\"\n",
    );
    let l = Library::load(std::slice::from_ref(&dir)).unwrap();
    assert_eq!(l.problems().len(), 4, "{:?}", l.problems());
    let e = l.render("bad", &json!({"x": 1})).unwrap_err();
    assert!(matches!(e, Error::Syntax { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("template bad (")
            && msg.contains("bad/template.hbs")
            && msg.contains("syntax error"),
        "{msg}"
    );
    // A broken partial is reported as itself, with its file and line.
    let msg = l.render("good", &json!({})).unwrap_err().to_string();
    assert!(
        msg.contains("good/part.hbs") && msg.contains("line 3") && msg.contains("syntax error"),
        "{msg}"
    );
    let msg = l
        .render_form("badform", &Map::new(), FormOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("badform/form.toml: line 4") && msg.contains("mandatry"),
        "{msg}"
    );
    let msg = l
        .render_form("badtype", &Map::new(), FormOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("input a: default: expected an integer"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn forms_type_command_line_pairs() {
    let l = Library::builtin();
    let form = l.form("spd-service").unwrap();
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let m = form
        .inputs_from_pairs(&pairs(&[("npods", "8"), ("svcname", "32")]))
        .unwrap();
    assert_eq!(m["npods"], json!(8));
    assert_eq!(m["svcname"], json!("32"));
    let e = form
        .inputs_from_pairs(&pairs(&[
            ("npods", "eight"),
            ("nope", "1"),
            ("app", "a"),
            ("app", "b"),
        ]))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let msg = e.to_string();
    for n in [
        "input npods: expected an integer, got \"eight\"",
        "input nope: unknown input",
        "input app: given twice",
    ] {
        assert!(msg.contains(n), "{msg}");
    }
}

#[test]
fn the_shipped_library_loads_cleanly() {
    let l = Library::builtin();
    assert!(l.problems().is_empty(), "{:?}", l.problems());
    for name in ["spd-service", "spdc-db.cnf", "spdc-sm.cnf", "spdc-br0.cfg"] {
        assert!(l.has(name), "{name} missing from {:?}", l.names());
    }
}

/// Every helper is documented in templates/README.md.
#[test]
fn every_helper_is_documented() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for name in tenet_templates::helpers::names() {
        assert!(
            readme.contains(&format!("`{name}")),
            "helper {name} is not documented in templates/README.md"
        );
    }
}

/// spdc-br0.cfg gives the export's br0.cfg with the address the 50-spdc.network script
/// computes from the host name.
#[test]
fn the_bridge_template_computes_the_address_as_the_network_script() {
    let export: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/opensvc-spd/node-export.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let fmt = export["rulesets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["variables"].as_array().unwrap())
        .find(|v| v["var_name"] == "spdc_net_file_br0_cfg")
        .map(|v| serde_json::from_str::<Value>(v["var_value"].as_str().unwrap()).unwrap())
        .unwrap()["fmt"]
        .as_str()
        .unwrap()
        .to_string();
    let want = |gw: &str| format!("{}\n", fmt.replace("%%ENV:SPDC_BRGW%%", gw));
    let l = Library::builtin();
    let out = l
        .render(
            "spdc-br0.cfg",
            &json!({"nodes": {"fqdn": "spd03.example.com"}}),
        )
        .unwrap();
    assert_eq!(out, want("10.0.0.3"));
    let out = l
        .render(
            "spdc-br0.cfg",
            &json!({"nodes": {"fqdn": "spd03"}, "spdc_brgw": "10.0.0.77"}),
        )
        .unwrap();
    assert_eq!(out, want("10.0.0.77"));
    let e = l
        .render("spdc-br0.cfg", &json!({"nodes": {"fqdn": "nodigits"}}))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spdc-br0.cfg/gateway") && e.contains("the node name nodigits has no digits"),
        "{e}"
    );
    // Digits out of the network's host range are refused too.
    let e = l
        .render("spdc-br0.cfg", &json!({"nodes": {"fqdn": "spd300"}}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("host 300 is outside 10.0.0.0/24"), "{e}");
}
