//! An offline checker for the Terraform modules and Nomad jobspecs under `deploy/`.
//!
//! No terraform or nomad binary is available where the tests run, so this does the part of
//! `terraform validate` that catches real mistakes, from the parsed HCL (hcl-rs):
//! - every `var.`, `local.`, `module.`, `data.` and resource reference resolves, and an attribute
//!   read from an `oci_*` resource is one the provider exports;
//! - module calls pass only the child's variables and every required one;
//! - `file()` / `templatefile()` paths exist, and a template only interpolates the variables the
//!   call passes;
//! - every argument and nested block of an `oci_*` resource or data source exists in the OCI
//!   provider schema (`deploy/schema/oci-7.19.0-subset.json`), required ones are present, and
//!   single blocks are not repeated;
//! - a `nomad_job` passes only variables its jobspec declares, and all of its required ones;
//! - in a Nomad jobspec, references are to declared variables, its locals or Nomad runtime
//!   values.
//!
//! Every problem is a line `FILE: message`; an empty list means the tree passed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use hcl::expr::{Expression, ObjectKey, TemplateExpr, TraversalOperator};
use hcl::template::{Directive, Element, Template};
use hcl::{Block, BlockLabel, Body, Structure};
use serde_json::Value as Json;

/// Block schemas of the OCI provider: `resource` and `data` maps of type name to block schema.
pub struct Schema {
    root: Json,
}

impl Schema {
    /// Reads a schema file in the shape `deploy/schema/extract.py` writes.
    pub fn load(path: &Path) -> Result<Schema, String> {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let root: Json = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        for kind in ["resource", "data"] {
            if !root.get(kind).is_some_and(Json::is_object) {
                return Err(format!("{}: no `{kind}` object", path.display()));
            }
        }
        Ok(Schema { root })
    }

    /// The schema of a resource (`kind` = "resource") or data source (`kind` = "data") type.
    pub fn block(&self, kind: &str, ty: &str) -> Option<&Json> {
        self.root.get(kind)?.get(ty)
    }

    /// All type names of one kind in the schema.
    pub fn types(&self, kind: &str) -> BTreeSet<String> {
        self.root
            .get(kind)
            .and_then(Json::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Values the OCI API accepts where the provider schema only says "string". Each list comes from
/// the OCI API reference (SDK enums), not from the schema file.
const ENUMS: &[(&str, &str, &[&str])] = &[(
    "oci_network_load_balancer_backend_set",
    "policy",
    &["FIVE_TUPLE", "THREE_TUPLE", "TWO_TUPLE"],
)];

/// Arguments Terraform itself handles on every resource / data block.
const META_ARGS: &[&str] = &["count", "for_each", "depends_on", "provider"];
/// Arguments of a `module` block that are not the child's variables.
const MODULE_META_ARGS: &[&str] = &[
    "source",
    "version",
    "count",
    "for_each",
    "providers",
    "depends_on",
];
/// References Terraform provides in any module.
const TF_BUILTIN_ROOTS: &[&str] = &["each", "count", "path", "terraform", "self"];
/// Runtime values a Nomad jobspec may interpolate (`${meta.pool_type}`, `${attr.x}`, ...).
const NOMAD_RUNTIME_ROOTS: &[&str] = &["attr", "meta", "node"];

/// What a checked tree contained, so that a test can prove the check was not vacuous.
#[derive(Debug, Default)]
pub struct Stats {
    /// Terraform module directories checked.
    pub modules: usize,
    /// `oci_*` resource and data blocks checked against the schema.
    pub oci_blocks: usize,
    /// References resolved.
    pub references: usize,
    /// Nomad jobspecs checked.
    pub jobspecs: usize,
    /// `oci_*` types used, as ("resource" | "data", type).
    pub oci_types: BTreeSet<(String, String)>,
}

/// One parsed Terraform module: every `.tf` file of a directory.
pub struct Module {
    /// The directory.
    pub dir: PathBuf,
    /// Each file with its parsed body.
    pub files: Vec<(PathBuf, Body)>,
    /// Variable name => its `default` expression, if any.
    pub variables: BTreeMap<String, Option<Expression>>,
    /// Local name => expression.
    pub locals: BTreeMap<String, Expression>,
    /// "type.name" of each resource.
    pub resources: BTreeSet<String>,
    /// "type.name" of each data source.
    pub data: BTreeSet<String>,
    /// Output names.
    pub outputs: BTreeSet<String>,
    /// Module call name => its block.
    pub calls: BTreeMap<String, Block>,
}

impl Module {
    /// Parses every `.tf` file of `dir`. Parse failures are returned as problems.
    pub fn load(dir: &Path) -> Result<Module, Vec<String>> {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let mut module = Module {
            dir: dir.clone(),
            files: Vec::new(),
            variables: BTreeMap::new(),
            locals: BTreeMap::new(),
            resources: BTreeSet::new(),
            data: BTreeSet::new(),
            outputs: BTreeSet::new(),
            calls: BTreeMap::new(),
        };
        let mut errors = Vec::new();
        for path in files_with_suffix(&dir, ".tf", false) {
            match parse_file(&path) {
                Ok(body) => module.files.push((path, body)),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for (_, body) in &module.files {
            for block in body.blocks() {
                let labels = labels(block);
                match (block.identifier.as_str(), labels.as_slice()) {
                    ("variable", [name]) => {
                        let default = attr(&block.body, "default").cloned();
                        module.variables.insert(name.clone(), default);
                    }
                    ("locals", []) => {
                        for a in block.body.attributes() {
                            module.locals.insert(a.key.to_string(), a.expr.clone());
                        }
                    }
                    ("resource", [ty, name]) => {
                        module.resources.insert(format!("{ty}.{name}"));
                    }
                    ("data", [ty, name]) => {
                        module.data.insert(format!("{ty}.{name}"));
                    }
                    ("output", [name]) => {
                        module.outputs.insert(name.clone());
                    }
                    ("module", [name]) => {
                        module.calls.insert(name.clone(), block.clone());
                    }
                    _ => {}
                }
            }
        }
        Ok(module)
    }

    /// The blocks `kind "ty" "name"` (e.g. `resource "oci_core_volume" "emqx"`) of this module.
    pub fn block(&self, kind: &str, want: &[&str]) -> Option<&Block> {
        self.files
            .iter()
            .flat_map(|(_, body)| body.blocks())
            .find(|b| b.identifier.as_str() == kind && labels(b) == want)
    }
}

/// Checks every Terraform module and Nomad jobspec under `root`.
pub fn check_tree(root: &Path, schema: &Schema) -> (Vec<String>, Stats) {
    let mut checker = Checker {
        schema,
        modules: HashMap::new(),
        errors: Vec::new(),
        stats: Stats::default(),
    };
    let mut dirs = BTreeSet::new();
    for tf in files_with_suffix(root, ".tf", true) {
        if let Some(dir) = tf.parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    for dir in &dirs {
        checker.check_module(dir);
    }
    for jobspec in files_with_suffix(root, ".nomad.hcl", true) {
        checker.check_jobspec(&jobspec);
    }
    for tfvars in files_with_suffix(root, ".tfvars.example", true) {
        checker.check_tfvars(&tfvars);
    }
    (checker.errors, checker.stats)
}

/// Files under `dir` whose name ends with `suffix`, sorted; recursive or not.
pub fn files_with_suffix(dir: &Path, suffix: &str, recursive: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if recursive {
                    stack.push(path);
                }
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Parses one HCL file; the error names the file.
pub fn parse_file(path: &Path) -> Result<Body, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    hcl::parse(&text).map_err(|e| format!("{}: HCL parse error: {e}", path.display()))
}

/// The labels of a block as strings.
pub fn labels(block: &Block) -> Vec<String> {
    block
        .labels
        .iter()
        .map(|l| match l {
            BlockLabel::Identifier(i) => i.to_string(),
            BlockLabel::String(s) => s.clone(),
        })
        .collect()
}

/// The expression of attribute `key` in `body`.
pub fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|a| a.key.as_str() == key)
        .map(|a| &a.expr)
}

/// The text of a template expression, or of a plain string.
pub fn template_text(expr: &Expression) -> Option<String> {
    match expr {
        Expression::String(s) => Some(s.clone()),
        Expression::TemplateExpr(t) => Some(match t.as_ref() {
            TemplateExpr::QuotedString(s) => s.clone(),
            TemplateExpr::Heredoc(h) => h.template.clone(),
        }),
        _ => None,
    }
}

/// Where references are being resolved: a Terraform module or a Nomad jobspec.
enum Scope<'a> {
    Terraform(&'a Module),
    /// A jobspec: its declared variables and its locals.
    Nomad {
        vars: &'a BTreeSet<String>,
        locals: &'a BTreeSet<String>,
    },
}

struct Checker<'s> {
    schema: &'s Schema,
    modules: HashMap<PathBuf, Option<Module>>,
    errors: Vec<String>,
    stats: Stats,
}

impl Checker<'_> {
    /// Loads (once) the module in `dir`; `None` if it does not parse.
    fn module(&mut self, dir: &Path) -> Option<&Module> {
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        if !self.modules.contains_key(&key) {
            let loaded = match Module::load(dir) {
                Ok(m) => Some(m),
                Err(errs) => {
                    self.errors.extend(errs);
                    None
                }
            };
            self.modules.insert(key.clone(), loaded);
        }
        self.modules.get(&key).and_then(Option::as_ref)
    }

    fn check_module(&mut self, dir: &Path) {
        // Take the module out of the cache so that child modules can be loaded while it is used.
        if self.module(dir).is_none() {
            return;
        }
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let Some(Some(module)) = self.modules.remove(&key) else {
            return;
        };
        self.stats.modules += 1;
        for (file, body) in &module.files {
            let file = file.display().to_string();
            for block in body.blocks() {
                self.check_top_block(&module, &file, block);
            }
        }
        for (name, call) in &module.calls {
            self.check_call(&module, name, call);
        }
        self.modules.insert(key, Some(module));
    }

    fn check_top_block(&mut self, module: &Module, file: &str, block: &Block) {
        let labels = labels(block);
        let kind = block.identifier.as_str();
        let mut scope = Vec::new();
        // `type` of a variable is a type expression, not a reference.
        let skip: &[&str] = match kind {
            "variable" => &["type"],
            "module" => &["providers"],
            _ => &[],
        };
        self.walk_body(
            &Scope::Terraform(module),
            file,
            &block.body,
            &mut scope,
            skip,
        );
        if let ("resource" | "data", [ty, name]) = (kind, labels.as_slice()) {
            if ty.starts_with("oci_") {
                let schema_kind = if kind == "resource" {
                    "resource"
                } else {
                    "data"
                };
                self.stats
                    .oci_types
                    .insert((schema_kind.to_string(), ty.clone()));
                self.stats.oci_blocks += 1;
                match self.schema.block(schema_kind, ty) {
                    Some(s) => {
                        let s = s.clone();
                        self.check_schema(
                            module,
                            file,
                            &format!("{ty}.{name}"),
                            ty,
                            &block.body,
                            &s,
                            true,
                        )
                    }
                    None => self.errors.push(format!(
                        "{file}: {kind} type {ty} is not in the OCI provider schema"
                    )),
                }
            }
            if ty == "nomad_job" {
                self.check_nomad_job(module, file, name, &block.body);
            }
        }
    }

    /// Walks every expression of `body`, resolving references and checking file paths.
    fn walk_body(
        &mut self,
        scope: &Scope,
        file: &str,
        body: &Body,
        bound: &mut Vec<String>,
        skip: &[&str],
    ) {
        for structure in body.iter() {
            match structure {
                Structure::Attribute(a) => {
                    if !skip.contains(&a.key.as_str()) {
                        self.walk_expr(scope, file, &a.expr, bound);
                    }
                }
                Structure::Block(b) => match b.identifier.as_str() {
                    "dynamic" => {
                        let name = labels(b).into_iter().next().unwrap_or_default();
                        let iterator = match attr(&b.body, "iterator") {
                            Some(Expression::Variable(v)) => v.to_string(),
                            _ => name,
                        };
                        if let Some(e) = attr(&b.body, "for_each") {
                            self.walk_expr(scope, file, e, bound);
                        }
                        bound.push(iterator);
                        for content in b
                            .body
                            .blocks()
                            .filter(|c| c.identifier.as_str() == "content")
                        {
                            self.walk_body(scope, file, &content.body, bound, &[]);
                        }
                        bound.pop();
                    }
                    // These name attributes of the resource itself, not references.
                    "lifecycle" => self.walk_body(
                        scope,
                        file,
                        &b.body,
                        bound,
                        &["ignore_changes", "replace_triggered_by"],
                    ),
                    _ => self.walk_body(scope, file, &b.body, bound, &[]),
                },
            }
        }
    }

    fn walk_expr(&mut self, scope: &Scope, file: &str, expr: &Expression, bound: &mut Vec<String>) {
        match expr {
            Expression::Null
            | Expression::Bool(_)
            | Expression::Number(_)
            | Expression::String(_) => {}
            Expression::Array(items) => {
                for e in items {
                    self.walk_expr(scope, file, e, bound);
                }
            }
            Expression::Object(obj) => {
                for (k, v) in obj {
                    if let ObjectKey::Expression(k) = k {
                        // A bare word key (`{ mqtt = 1 }`) parses as a variable: it is a name.
                        if !matches!(k, Expression::Variable(_)) {
                            self.walk_expr(scope, file, k, bound);
                        }
                    }
                    self.walk_expr(scope, file, v, bound);
                }
            }
            Expression::TemplateExpr(t) => match Template::from_expr(t) {
                Ok(template) => self.walk_template(scope, file, &template, bound),
                Err(e) => self.errors.push(format!("{file}: bad template {t}: {e}")),
            },
            Expression::Variable(v) => {
                let name = v.to_string();
                if !bound.contains(&name) {
                    self.check_ref(scope, file, &name, &[]);
                }
            }
            Expression::Traversal(t) => {
                match &t.expr {
                    Expression::Variable(v) => {
                        let name = v.to_string();
                        if !bound.contains(&name) {
                            self.check_ref(scope, file, &name, &t.operators);
                        }
                    }
                    other => self.walk_expr(scope, file, other, bound),
                }
                for op in &t.operators {
                    if let TraversalOperator::Index(e) = op {
                        self.walk_expr(scope, file, e, bound);
                    }
                }
            }
            Expression::FuncCall(f) => {
                for e in &f.args {
                    self.walk_expr(scope, file, e, bound);
                }
                if let Scope::Terraform(module) = scope {
                    self.check_file_call(module, file, f.name.name.as_str(), &f.args);
                }
            }
            Expression::Parenthesis(e) => self.walk_expr(scope, file, e, bound),
            Expression::Conditional(c) => {
                self.walk_expr(scope, file, &c.cond_expr, bound);
                self.walk_expr(scope, file, &c.true_expr, bound);
                self.walk_expr(scope, file, &c.false_expr, bound);
            }
            Expression::Operation(op) => match op.as_ref() {
                hcl::expr::Operation::Unary(u) => self.walk_expr(scope, file, &u.expr, bound),
                hcl::expr::Operation::Binary(b) => {
                    self.walk_expr(scope, file, &b.lhs_expr, bound);
                    self.walk_expr(scope, file, &b.rhs_expr, bound);
                }
            },
            Expression::ForExpr(f) => {
                self.walk_expr(scope, file, &f.collection_expr, bound);
                let n = bound.len();
                bound.extend(f.key_var.iter().map(|k| k.to_string()));
                bound.push(f.value_var.to_string());
                if let Some(k) = &f.key_expr {
                    self.walk_expr(scope, file, k, bound);
                }
                self.walk_expr(scope, file, &f.value_expr, bound);
                if let Some(c) = &f.cond_expr {
                    self.walk_expr(scope, file, c, bound);
                }
                bound.truncate(n);
            }
            other => self.errors.push(format!(
                "{file}: expression the checker does not know: {other:?}"
            )),
        }
    }

    fn walk_template(
        &mut self,
        scope: &Scope,
        file: &str,
        template: &Template,
        bound: &mut Vec<String>,
    ) {
        for element in template.elements() {
            match element {
                Element::Literal(_) => {}
                Element::Interpolation(i) => self.walk_expr(scope, file, &i.expr, bound),
                Element::Directive(d) => match d.as_ref() {
                    Directive::If(d) => {
                        self.walk_expr(scope, file, &d.cond_expr, bound);
                        self.walk_template(scope, file, &d.true_template, bound);
                        if let Some(f) = &d.false_template {
                            self.walk_template(scope, file, f, bound);
                        }
                    }
                    Directive::For(d) => {
                        self.walk_expr(scope, file, &d.collection_expr, bound);
                        let n = bound.len();
                        bound.extend(d.key_var.iter().map(|k| k.to_string()));
                        bound.push(d.value_var.to_string());
                        self.walk_template(scope, file, &d.template, bound);
                        bound.truncate(n);
                    }
                },
            }
        }
    }

    /// Resolves one reference `root.op.op...`.
    fn check_ref(&mut self, scope: &Scope, file: &str, root: &str, ops: &[TraversalOperator]) {
        self.stats.references += 1;
        let names: Vec<&str> = ops
            .iter()
            .filter_map(|op| match op {
                TraversalOperator::GetAttr(i) => Some(i.as_str()),
                _ => None,
            })
            .collect();
        let first = ops.first().and_then(|op| match op {
            TraversalOperator::GetAttr(i) => Some(i.as_str()),
            _ => None,
        });
        let module = match scope {
            Scope::Nomad { vars, locals } => {
                let ok = match root {
                    "var" => first.is_some_and(|n| vars.contains(n)),
                    "local" => first.is_some_and(|n| locals.contains(n)),
                    r => NOMAD_RUNTIME_ROOTS.contains(&r) || r.starts_with("NOMAD_"),
                };
                if !ok {
                    let shown = std::iter::once(root)
                        .chain(first)
                        .collect::<Vec<_>>()
                        .join(".");
                    self.errors
                        .push(format!("{file}: unresolved reference {shown}"));
                }
                return;
            }
            Scope::Terraform(m) => *m,
        };
        let problem = match root {
            "var" => match first {
                Some(n) if module.variables.contains_key(n) => None,
                _ => Some(format!("var.{} is not declared", first.unwrap_or("?"))),
            },
            "local" => match first {
                Some(n) if module.locals.contains_key(n) => None,
                _ => Some(format!("local.{} is not declared", first.unwrap_or("?"))),
            },
            "module" => match first {
                Some(n) => match module.calls.get(n) {
                    None => Some(format!("module.{n} is not declared")),
                    Some(call) => {
                        // The output read from the module, after any index: module.x[0].out.
                        let output = names.get(1).copied();
                        self.child_outputs(module, call)
                            .and_then(|outs| match output {
                                Some(o) if !outs.contains(o) => {
                                    Some(format!("module.{n}.{o}: the module has no output {o}"))
                                }
                                _ => None,
                            })
                    }
                },
                None => Some("bare `module` reference".to_string()),
            },
            "data" => match (names.first(), names.get(1)) {
                (Some(ty), Some(name)) if module.data.contains(&format!("{ty}.{name}")) => {
                    self.exported_problem("data", ty, name, names.get(2).copied())
                }
                (ty, name) => Some(format!(
                    "data.{}.{} is not declared",
                    ty.unwrap_or(&"?"),
                    name.unwrap_or(&"?")
                )),
            },
            r if TF_BUILTIN_ROOTS.contains(&r) => None,
            r => match first {
                Some(name) if module.resources.contains(&format!("{r}.{name}")) => {
                    self.exported_problem("resource", r, name, names.get(1).copied())
                }
                Some(name) if r.contains('_') => {
                    Some(format!("resource {r}.{name} is not declared"))
                }
                _ => Some(format!("unknown reference {r}")),
            },
        };
        if let Some(p) = problem {
            self.errors.push(format!("{file}: {p}"));
        }
    }

    /// A problem if `attribute` of an `oci_*` type is not among the attributes it exports.
    fn exported_problem(
        &self,
        kind: &str,
        ty: &str,
        name: &str,
        attribute: Option<&str>,
    ) -> Option<String> {
        let attribute = attribute?;
        if !ty.starts_with("oci_") {
            return None;
        }
        let schema = self.schema.block(kind, ty)?;
        let exported = schema.get("exported").and_then(Json::as_array);
        let ok = exported.is_some_and(|list| list.iter().any(|v| v.as_str() == Some(attribute)))
            || schema
                .get("attributes")
                .and_then(|a| a.get(attribute))
                .is_some();
        (!ok).then(|| format!("{ty}.{name}.{attribute}: {ty} exports no attribute {attribute}"))
    }

    /// The directory of a local module source (`./x`, `../x`).
    fn child_dir(module: &Module, call: &Block) -> Option<PathBuf> {
        match attr(&call.body, "source") {
            Some(Expression::String(s)) if s.starts_with("./") || s.starts_with("../") => {
                Some(module.dir.join(s))
            }
            _ => None,
        }
    }

    fn child_outputs(&mut self, module: &Module, call: &Block) -> Option<BTreeSet<String>> {
        let dir = Self::child_dir(module, call)?;
        self.module(&dir).map(|m| m.outputs.clone())
    }

    fn check_call(&mut self, module: &Module, name: &str, call: &Block) {
        let file = module.dir.display().to_string();
        let Some(dir) = Self::child_dir(module, call) else {
            self.errors
                .push(format!("{file}: module {name}: source is not a local path"));
            return;
        };
        if files_with_suffix(&dir, ".tf", false).is_empty() {
            self.errors.push(format!(
                "{file}: module {name}: source {} has no .tf files",
                dir.display()
            ));
            return;
        }
        let Some(child) = self.module(&dir) else {
            return;
        };
        let declared = has_default(&child.variables);
        let given: BTreeSet<String> = call
            .body
            .attributes()
            .map(|a| a.key.to_string())
            .filter(|k| !MODULE_META_ARGS.contains(&k.as_str()))
            .collect();
        self.errors.extend(argument_problems(
            &given,
            &declared,
            |arg| {
                format!(
                    "{file}: module {name}: unknown argument {arg} (not a variable of {})",
                    dir.display()
                )
            },
            |var| format!("{file}: module {name}: missing required argument {var}"),
        ));
    }

    /// `file(path)` and `templatefile(path, vars)`: the path must exist; a template may only
    /// interpolate the variables passed.
    fn check_file_call(&mut self, module: &Module, file: &str, func: &str, args: &[Expression]) {
        if !matches!(func, "file" | "templatefile" | "filebase64") {
            return;
        }
        let Some(path) = args.first().and_then(|a| static_path(module, a)) else {
            self.errors.push(format!(
                "{file}: {func}(): the path is not a static \"${{path.module}}/...\" string"
            ));
            return;
        };
        let Ok(text) = fs::read_to_string(&path) else {
            self.errors
                .push(format!("{file}: {func}(): {} not found", path.display()));
            return;
        };
        if func != "templatefile" {
            return;
        }
        let passed: BTreeSet<String> = match args.get(1) {
            Some(Expression::Object(o)) => o.keys().map(object_key_name).collect(),
            _ => {
                self.errors.push(format!(
                    "{file}: templatefile(): the variables are not an object literal"
                ));
                return;
            }
        };
        match text.parse::<Template>() {
            Ok(template) => {
                let mut used = BTreeSet::new();
                template_roots(&template, &mut Vec::new(), &mut used);
                for root in used.difference(&passed) {
                    self.errors.push(format!(
                        "{}: template interpolates ${{{root}}}, which the templatefile() call in {file} does not pass",
                        path.display()
                    ));
                }
            }
            Err(e) => self
                .errors
                .push(format!("{}: template does not parse: {e}", path.display())),
        }
    }

    /// Checks a block body against its provider schema, recursively.
    #[allow(clippy::too_many_arguments)]
    fn check_schema(
        &mut self,
        module: &Module,
        file: &str,
        at: &str,
        ty: &str,
        body: &Body,
        schema: &Json,
        top: bool,
    ) {
        let attrs = schema.get("attributes").and_then(Json::as_object);
        let blocks = schema.get("blocks").and_then(Json::as_object);
        let mut seen_attrs = BTreeSet::new();
        for a in body.attributes() {
            let key = a.key.as_str();
            if top && META_ARGS.contains(&key) {
                continue;
            }
            seen_attrs.insert(key.to_string());
            if !attrs.is_some_and(|m| m.contains_key(key)) {
                self.errors
                    .push(format!("{file}: {at}: unsupported argument {key}"));
                continue;
            }
            // Only a static value (literal, or a var / local default) can be checked here.
            let refused = ENUMS
                .iter()
                .find(|(t, k, _)| *t == ty && *k == key)
                .and_then(|(_, _, allowed)| {
                    literal_string(module, &a.expr)
                        .filter(|v| !allowed.contains(&v.as_str()))
                        .map(|v| (v, allowed))
                });
            if let Some((value, allowed)) = refused {
                self.errors.push(format!(
                    "{file}: {at}.{key} = {value:?}: must be one of {}",
                    allowed.join(", ")
                ));
            }
        }
        let mut seen_blocks: BTreeMap<String, usize> = BTreeMap::new();
        for b in body.blocks() {
            let (name, inner) = match b.identifier.as_str() {
                "lifecycle" if top => continue,
                "dynamic" => {
                    let name = labels(b).into_iter().next().unwrap_or_default();
                    let content = b.body.blocks().find(|c| c.identifier.as_str() == "content");
                    match content {
                        Some(c) => (name, &c.body),
                        None => {
                            self.errors.push(format!(
                                "{file}: {at}: dynamic {name:?} has no content block"
                            ));
                            continue;
                        }
                    }
                }
                other => (other.to_string(), &b.body),
            };
            *seen_blocks.entry(name.clone()).or_default() += 1;
            match blocks.and_then(|m| m.get(&name)) {
                Some(sub) => {
                    let sub = sub.clone();
                    self.check_schema(
                        module,
                        file,
                        &format!("{at}.{name}"),
                        ty,
                        inner,
                        &sub,
                        false,
                    )
                }
                None => self
                    .errors
                    .push(format!("{file}: {at}: unsupported block {name}")),
            }
        }
        for (name, count) in &seen_blocks {
            let list = blocks
                .and_then(|m| m.get(name))
                .and_then(|s| s.get("list"))
                .and_then(Json::as_bool)
                .unwrap_or(true);
            if !list && *count > 1 {
                self.errors.push(format!(
                    "{file}: {at}: block {name} may appear once, found {count}"
                ));
            }
        }
        for (name, s) in attrs.into_iter().flatten() {
            if is_required(s) && !seen_attrs.contains(name) {
                self.errors
                    .push(format!("{file}: {at}: missing required argument {name}"));
            }
        }
        for (name, s) in blocks.into_iter().flatten() {
            if is_required(s) && !seen_blocks.contains_key(name) {
                self.errors
                    .push(format!("{file}: {at}: missing required block {name}"));
            }
        }
    }

    /// A `nomad_job` resource: its jobspec file exists and `hcl2.vars` matches the jobspec's
    /// variables.
    fn check_nomad_job(&mut self, module: &Module, file: &str, name: &str, body: &Body) {
        let Some(Expression::FuncCall(f)) = attr(body, "jobspec") else {
            self.errors.push(format!(
                "{file}: nomad_job.{name}: jobspec is not read with file()"
            ));
            return;
        };
        let Some(path) = f.args.first().and_then(|a| static_path(module, a)) else {
            return; // reported by check_file_call
        };
        let Ok(jobspec) = parse_file(&path) else {
            return; // reported when the jobspec itself is checked
        };
        let declared = jobspec_variables(&jobspec);
        let passed: BTreeSet<String> = body
            .blocks()
            .filter(|b| b.identifier.as_str() == "hcl2")
            .filter_map(|b| match attr(&b.body, "vars") {
                Some(Expression::Object(o)) => {
                    Some(o.keys().map(object_key_name).collect::<Vec<_>>())
                }
                _ => None,
            })
            .flatten()
            .collect();
        self.errors.extend(argument_problems(
            &passed,
            &declared,
            |var| format!("{file}: nomad_job.{name}: hcl2.vars.{var} is not a variable of {}", path.display()),
            |var| format!("{file}: nomad_job.{name}: required jobspec variable {var} is not passed in hcl2.vars"),
        ));
    }

    fn check_jobspec(&mut self, path: &Path) {
        let file = path.display().to_string();
        let body = match parse_file(path) {
            Ok(b) => b,
            Err(e) => {
                self.errors.push(e);
                return;
            }
        };
        self.stats.jobspecs += 1;
        let vars: BTreeSet<String> = jobspec_variables(&body).into_keys().collect();
        let locals: BTreeSet<String> = jobspec_locals(&body).into_keys().collect();
        if body
            .blocks()
            .filter(|b| b.identifier.as_str() == "job")
            .count()
            != 1
        {
            self.errors
                .push(format!("{file}: a jobspec must hold exactly one job block"));
        }
        for block in body.blocks() {
            let skip: &[&str] = if block.identifier.as_str() == "variable" {
                &["type"]
            } else {
                &[]
            };
            self.walk_body(
                &Scope::Nomad {
                    vars: &vars,
                    locals: &locals,
                },
                &file,
                &block.body,
                &mut Vec::new(),
                skip,
            );
        }
    }

    /// A `.tfvars.example` next to a root module: only its variables, and all required ones.
    fn check_tfvars(&mut self, path: &Path) {
        let file = path.display().to_string();
        let body = match parse_file(path) {
            Ok(b) => b,
            Err(e) => {
                self.errors.push(e);
                return;
            }
        };
        let Some(dir) = path.parent() else { return };
        let Some(module) = self.module(dir) else {
            return;
        };
        let declared = has_default(&module.variables);
        let given: BTreeSet<String> = body.attributes().map(|a| a.key.to_string()).collect();
        self.errors.extend(argument_problems(
            &given,
            &declared,
            |key| format!("{file}: {key} is not a variable of {}", dir.display()),
            |var| format!("{file}: required variable {var} is not set"),
        ));
    }
}

/// The problems of passing `given` names to something that declares `declared` (name =>
/// whether it has a default): each unknown name, each required name not given.
fn argument_problems(
    given: &BTreeSet<String>,
    declared: &BTreeMap<String, bool>,
    unknown: impl Fn(&str) -> String,
    missing: impl Fn(&str) -> String,
) -> Vec<String> {
    let unknown = given
        .iter()
        .filter(|g| !declared.contains_key(*g))
        .map(|g| unknown(g));
    let missing = declared
        .iter()
        .filter(|(name, has_default)| !**has_default && !given.contains(*name))
        .map(|(name, _)| missing(name));
    unknown.chain(missing).collect()
}

/// Variable name => whether it has a default, of a Terraform module.
fn has_default(variables: &BTreeMap<String, Option<Expression>>) -> BTreeMap<String, bool> {
    variables
        .iter()
        .map(|(k, v)| (k.clone(), v.is_some()))
        .collect()
}

/// Variable name => whether it has a default, of a Nomad jobspec.
pub fn jobspec_variables(body: &Body) -> BTreeMap<String, bool> {
    body.blocks()
        .filter(|b| b.identifier.as_str() == "variable")
        .filter_map(|b| {
            let name = labels(b).into_iter().next()?;
            Some((name, attr(&b.body, "default").is_some()))
        })
        .collect()
}

/// The `locals` of a jobspec (Nomad HCL2 has them as Terraform does): name -> expression.
pub fn jobspec_locals(body: &Body) -> BTreeMap<String, Expression> {
    body.blocks()
        .filter(|b| b.identifier.as_str() == "locals")
        .flat_map(|b| b.body.attributes())
        .map(|a| (a.key.to_string(), a.expr.clone()))
        .collect()
}

fn is_required(schema: &Json) -> bool {
    schema
        .get("required")
        .and_then(Json::as_bool)
        .unwrap_or(false)
}

fn object_key_name(key: &ObjectKey) -> String {
    match key {
        ObjectKey::Identifier(i) => i.to_string(),
        ObjectKey::Expression(Expression::Variable(v)) => v.to_string(),
        ObjectKey::Expression(e) => template_text(e).unwrap_or_else(|| format!("{e:?}")),
        other => format!("{other:?}"),
    }
}

/// `"${path.module}/x"` or a literal path, resolved against the module directory.
fn static_path(module: &Module, expr: &Expression) -> Option<PathBuf> {
    let text = template_text(expr)?;
    let relative = text
        .strip_prefix("${path.module}/")
        .map(str::to_string)
        .or_else(|| (!text.contains("${")).then(|| text.clone()))?;
    Some(module.dir.join(relative))
}

/// The string a literal, `var.x` (its default) or `local.x` evaluates to, where it is static.
fn literal_string(module: &Module, expr: &Expression) -> Option<String> {
    match expr {
        Expression::String(s) => Some(s.clone()),
        Expression::Traversal(t) => {
            let Expression::Variable(root) = &t.expr else {
                return None;
            };
            let Some(TraversalOperator::GetAttr(name)) = t.operators.first() else {
                return None;
            };
            if t.operators.len() != 1 {
                return None;
            }
            match root.as_str() {
                "var" => literal_string(module, module.variables.get(name.as_str())?.as_ref()?),
                "local" => literal_string(module, module.locals.get(name.as_str())?),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Root names interpolated by a template, outside the names its own `for` directives bind.
fn template_roots(template: &Template, bound: &mut Vec<String>, out: &mut BTreeSet<String>) {
    for element in template.elements() {
        match element {
            Element::Literal(_) => {}
            Element::Interpolation(i) => expr_roots(&i.expr, bound, out),
            Element::Directive(d) => match d.as_ref() {
                Directive::If(d) => {
                    expr_roots(&d.cond_expr, bound, out);
                    template_roots(&d.true_template, bound, out);
                    if let Some(f) = &d.false_template {
                        template_roots(f, bound, out);
                    }
                }
                Directive::For(d) => {
                    expr_roots(&d.collection_expr, bound, out);
                    let n = bound.len();
                    bound.extend(d.key_var.iter().map(|k| k.to_string()));
                    bound.push(d.value_var.to_string());
                    template_roots(&d.template, bound, out);
                    bound.truncate(n);
                }
            },
        }
    }
}

fn expr_roots(expr: &Expression, bound: &[String], out: &mut BTreeSet<String>) {
    let mut add = |name: String| {
        if !bound.contains(&name) {
            out.insert(name);
        }
    };
    match expr {
        Expression::Variable(v) => add(v.to_string()),
        Expression::Traversal(t) => match &t.expr {
            Expression::Variable(v) => add(v.to_string()),
            other => expr_roots(other, bound, out),
        },
        Expression::FuncCall(f) => f.args.iter().for_each(|a| expr_roots(a, bound, out)),
        Expression::Parenthesis(e) => expr_roots(e, bound, out),
        Expression::Array(items) => items.iter().for_each(|a| expr_roots(a, bound, out)),
        Expression::Conditional(c) => {
            expr_roots(&c.cond_expr, bound, out);
            expr_roots(&c.true_expr, bound, out);
            expr_roots(&c.false_expr, bound, out);
        }
        Expression::Operation(op) => match op.as_ref() {
            hcl::expr::Operation::Unary(u) => expr_roots(&u.expr, bound, out),
            hcl::expr::Operation::Binary(b) => {
                expr_roots(&b.lhs_expr, bound, out);
                expr_roots(&b.rhs_expr, bound, out);
            }
        },
        _ => {}
    }
}
