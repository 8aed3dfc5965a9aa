//! The policy objects (rulesets, filtersets, modulesets) in their tables: the whole bundle read
//! in creation order, and an edit saved as the difference between two bundles (ids and
//! attachments of untouched objects kept).

use rusqlite::{Connection, OptionalExtension, params};
use tenet_rulesets::export::{
    filter_op_str, logical_op_str, parse_filter_op, parse_logical_op, parse_ruleset_type,
    ruleset_type_str,
};
use tenet_rulesets::{
    Bundle, Filter, FilterEntry, FilterTest, Filterset, Meta, ModuleRef, Moduleset, Ruleset,
    VarValue, Variable,
};

use crate::error::{Error, Result};

pub(super) fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(super) fn parse_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

pub(super) fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Store(format!("corrupt {what} in the database: {detail}"))
}

/// Reads every policy object, in creation order.
pub(super) fn load_bundle(conn: &Connection) -> Result<Bundle> {
    let mut bundle = Bundle::default();
    let mut fs_names = std::collections::HashMap::new();
    {
        let mut st =
            conn.prepare_cached("SELECT id, name, stats, ext_id FROM filtersets ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        for row in rows {
            let (id, name, stats, ext_id) = row?;
            fs_names.insert(id, name.clone());
            bundle.filtersets.insert(
                name.clone(),
                Filterset {
                    name,
                    stats,
                    id: ext_id,
                    filters: Vec::new(),
                },
            );
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT filterset_id, logical_op, ord, fact_table, field, op, value, ext_id, nested_filterset_id
             FROM filterset_entries ORDER BY filterset_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let fs_id: i64 = r.get(0)?;
            let lop: String = r.get(1)?;
            let logical_op =
                parse_logical_op(&lop).ok_or_else(|| corrupt("filter logical op", &lop))?;
            let nested: Option<i64> = r.get(8)?;
            let test = match nested {
                Some(n) => FilterTest::Filterset(
                    fs_names
                        .get(&n)
                        .cloned()
                        .ok_or_else(|| corrupt("nested filterset", n))?,
                ),
                None => {
                    let op: String = r.get(5)?;
                    FilterTest::Filter(Filter {
                        table: r.get(3)?,
                        field: r.get(4)?,
                        op: parse_filter_op(&op).ok_or_else(|| corrupt("filter op", &op))?,
                        value: r.get(6)?,
                        id: r.get(7)?,
                    })
                }
            };
            let name = fs_names
                .get(&fs_id)
                .ok_or_else(|| corrupt("filterset entry", fs_id))?;
            bundle
                .filtersets
                .get_mut(name)
                .expect("filterset loaded above")
                .filters
                .push(FilterEntry {
                    logical_op,
                    order: r.get(2)?,
                    test,
                });
        }
    }
    let mut rs_names = std::collections::HashMap::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT id, name, kind, public, filterset_id, ext_id, publications, responsibles FROM rulesets ORDER BY id",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let name: String = r.get(1)?;
            let kind: String = r.get(2)?;
            let fs: Option<i64> = r.get(4)?;
            let filterset = match fs {
                Some(f) => Some(
                    fs_names
                        .get(&f)
                        .cloned()
                        .ok_or_else(|| corrupt("ruleset filterset", f))?,
                ),
                None => None,
            };
            rs_names.insert(id, name.clone());
            bundle.rulesets.insert(
                name.clone(),
                Ruleset {
                    name,
                    kind: parse_ruleset_type(&kind)
                        .ok_or_else(|| corrupt("ruleset type", &kind))?,
                    filterset,
                    public: r.get(3)?,
                    children: Vec::new(),
                    variables: Vec::new(),
                    meta: Meta {
                        id: r.get(5)?,
                        publications: parse_list(&r.get::<_, String>(6)?),
                        responsibles: parse_list(&r.get::<_, String>(7)?),
                    },
                },
            );
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT ruleset_id, name, class, value, ext_id, author, updated FROM variables ORDER BY ruleset_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let rs: i64 = r.get(0)?;
            let value: String = r.get(3)?;
            let value: VarValue =
                serde_json::from_str(&value).map_err(|e| corrupt("variable value", e))?;
            let name = rs_names.get(&rs).ok_or_else(|| corrupt("variable", rs))?;
            bundle
                .rulesets
                .get_mut(name)
                .expect("ruleset loaded above")
                .variables
                .push(Variable {
                    name: r.get(1)?,
                    class: r.get(2)?,
                    value,
                    id: r.get(4)?,
                    author: r.get(5)?,
                    updated: r.get(6)?,
                });
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT parent_id, child_id FROM ruleset_children ORDER BY parent_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (p, c): (i64, i64) = (r.get(0)?, r.get(1)?);
            let child = rs_names
                .get(&c)
                .cloned()
                .ok_or_else(|| corrupt("ruleset child", c))?;
            let parent = rs_names
                .get(&p)
                .ok_or_else(|| corrupt("ruleset parent", p))?;
            bundle
                .rulesets
                .get_mut(parent)
                .expect("loaded")
                .children
                .push(child);
        }
    }
    let mut ms_names = std::collections::HashMap::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT id, name, ext_id, publications, responsibles FROM modulesets ORDER BY id",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let name: String = r.get(1)?;
            ms_names.insert(id, name.clone());
            bundle.modulesets.insert(
                name.clone(),
                Moduleset {
                    name,
                    modules: Vec::new(),
                    children: Vec::new(),
                    rulesets: Vec::new(),
                    meta: Meta {
                        id: r.get(2)?,
                        publications: parse_list(&r.get::<_, String>(3)?),
                        responsibles: parse_list(&r.get::<_, String>(4)?),
                    },
                },
            );
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT moduleset_id, name, autofix FROM moduleset_modules ORDER BY moduleset_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let ms: i64 = r.get(0)?;
            let name = ms_names.get(&ms).ok_or_else(|| corrupt("module", ms))?;
            bundle
                .modulesets
                .get_mut(name)
                .expect("loaded")
                .modules
                .push(ModuleRef {
                    name: r.get(1)?,
                    autofix: r.get(2)?,
                });
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT parent_id, child_id FROM moduleset_children ORDER BY parent_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (p, c): (i64, i64) = (r.get(0)?, r.get(1)?);
            let child = ms_names
                .get(&c)
                .cloned()
                .ok_or_else(|| corrupt("moduleset child", c))?;
            let parent = ms_names
                .get(&p)
                .ok_or_else(|| corrupt("moduleset parent", p))?;
            bundle
                .modulesets
                .get_mut(parent)
                .expect("loaded")
                .children
                .push(child);
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT moduleset_id, ruleset_id FROM moduleset_rulesets ORDER BY moduleset_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (m, rs): (i64, i64) = (r.get(0)?, r.get(1)?);
            let rs = rs_names
                .get(&rs)
                .cloned()
                .ok_or_else(|| corrupt("moduleset ruleset", rs))?;
            let ms = ms_names.get(&m).ok_or_else(|| corrupt("moduleset", m))?;
            bundle
                .modulesets
                .get_mut(ms)
                .expect("loaded")
                .rulesets
                .push(rs);
        }
    }
    Ok(bundle)
}

pub(super) fn id_of(conn: &Connection, table: &str, name: &str) -> Result<i64> {
    // `table` is one of a fixed set of identifiers chosen by this module, never user input.
    let sql = match table {
        "rulesets" => "SELECT id FROM rulesets WHERE name = ?1",
        "modulesets" => "SELECT id FROM modulesets WHERE name = ?1",
        "filtersets" => "SELECT id FROM filtersets WHERE name = ?1",
        other => return Err(Error::Store(format!("no table {other}"))),
    };
    conn.prepare_cached(sql)?
        .query_row([name], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::Store(format!("{table} {name} vanished during an edit")))
}

/// Writes the difference between `old` and `new` (both valid bundles): objects are matched by
/// name, so database ids (and the attachments pointing at them) survive edits.
pub(super) fn save_bundle(conn: &Connection, old: &Bundle, new: &Bundle) -> Result<()> {
    // 1. Relation rows of changed or removed objects go first, so nothing references an
    //    object about to be removed.
    for (name, fs) in &old.filtersets {
        if new.filtersets.get(name) != Some(fs) {
            let id = id_of(conn, "filtersets", name)?;
            conn.execute(
                "DELETE FROM filterset_entries WHERE filterset_id = ?1",
                [id],
            )?;
        }
    }
    for (name, rs) in &old.rulesets {
        if new.rulesets.get(name) != Some(rs) {
            let id = id_of(conn, "rulesets", name)?;
            conn.execute("DELETE FROM variables WHERE ruleset_id = ?1", [id])?;
            conn.execute("DELETE FROM ruleset_children WHERE parent_id = ?1", [id])?;
        }
    }
    for (name, ms) in &old.modulesets {
        if new.modulesets.get(name) != Some(ms) {
            let id = id_of(conn, "modulesets", name)?;
            conn.execute(
                "DELETE FROM moduleset_modules WHERE moduleset_id = ?1",
                [id],
            )?;
            conn.execute("DELETE FROM moduleset_children WHERE parent_id = ?1", [id])?;
            conn.execute(
                "DELETE FROM moduleset_rulesets WHERE moduleset_id = ?1",
                [id],
            )?;
        }
    }
    // 2. Removed objects (attachments to them cascade).
    for name in old
        .modulesets
        .keys()
        .filter(|n| !new.modulesets.contains_key(*n))
    {
        conn.execute("DELETE FROM modulesets WHERE name = ?1", [name])?;
    }
    for name in old
        .rulesets
        .keys()
        .filter(|n| !new.rulesets.contains_key(*n))
    {
        conn.execute("DELETE FROM rulesets WHERE name = ?1", [name])?;
    }
    for name in old
        .filtersets
        .keys()
        .filter(|n| !new.filtersets.contains_key(*n))
    {
        conn.execute("DELETE FROM filtersets WHERE name = ?1", [name])?;
    }
    // 3. Upsert changed and new objects, filtersets first (rulesets point at them).
    let changed_fs: Vec<&Filterset> = new
        .filtersets
        .values()
        .filter(|fs| old.filtersets.get(&fs.name) != Some(*fs))
        .collect();
    for fs in &changed_fs {
        conn.prepare_cached(
            "INSERT INTO filtersets (name, stats, ext_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET stats = excluded.stats, ext_id = excluded.ext_id",
        )?
        .execute(params![fs.name, fs.stats, fs.id])?;
    }
    for fs in &changed_fs {
        let id = id_of(conn, "filtersets", &fs.name)?;
        for (pos, e) in fs.filters.iter().enumerate() {
            let lop = logical_op_str(e.logical_op);
            match &e.test {
                FilterTest::Filter(f) => conn
                    .prepare_cached(
                        "INSERT INTO filterset_entries (filterset_id, position, logical_op, ord, fact_table, field, op, value, ext_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        id,
                        pos as i64,
                        lop,
                        e.order,
                        f.table,
                        f.field,
                        filter_op_str(f.op),
                        f.value,
                        f.id
                    ])?,
                FilterTest::Filterset(child) => {
                    let child_id = id_of(conn, "filtersets", child)?;
                    conn.prepare_cached(
                        "INSERT INTO filterset_entries (filterset_id, position, logical_op, ord, nested_filterset_id)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![id, pos as i64, lop, e.order, child_id])?
                }
            };
        }
    }
    let changed_rs: Vec<&Ruleset> = new
        .rulesets
        .values()
        .filter(|rs| old.rulesets.get(&rs.name) != Some(*rs))
        .collect();
    for rs in &changed_rs {
        let fs_id = match &rs.filterset {
            Some(f) => Some(id_of(conn, "filtersets", f)?),
            None => None,
        };
        conn.prepare_cached(
            "INSERT INTO rulesets (name, kind, public, filterset_id, ext_id, publications, responsibles)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, public = excluded.public,
               filterset_id = excluded.filterset_id, ext_id = excluded.ext_id,
               publications = excluded.publications, responsibles = excluded.responsibles",
        )?
        .execute(params![
            rs.name,
            ruleset_type_str(rs.kind),
            rs.public,
            fs_id,
            rs.meta.id,
            json_list(&rs.meta.publications),
            json_list(&rs.meta.responsibles)
        ])?;
    }
    for rs in &changed_rs {
        let id = id_of(conn, "rulesets", &rs.name)?;
        for (pos, v) in rs.variables.iter().enumerate() {
            let value = serde_json::to_string(&v.value).map_err(|e| Error::Store(e.to_string()))?;
            conn.prepare_cached(
                "INSERT INTO variables (ruleset_id, position, name, class, value, ext_id, author, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![id, pos as i64, v.name, v.class, value, v.id, v.author, v.updated])?;
        }
        for (pos, child) in rs.children.iter().enumerate() {
            let child_id = id_of(conn, "rulesets", child)?;
            conn.prepare_cached(
                "INSERT INTO ruleset_children (parent_id, child_id, position) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, child_id, pos as i64])?;
        }
    }
    let changed_ms: Vec<&Moduleset> = new
        .modulesets
        .values()
        .filter(|ms| old.modulesets.get(&ms.name) != Some(*ms))
        .collect();
    for ms in &changed_ms {
        conn.prepare_cached(
            "INSERT INTO modulesets (name, ext_id, publications, responsibles) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET ext_id = excluded.ext_id,
               publications = excluded.publications, responsibles = excluded.responsibles",
        )?
        .execute(params![
            ms.name,
            ms.meta.id,
            json_list(&ms.meta.publications),
            json_list(&ms.meta.responsibles)
        ])?;
    }
    for ms in &changed_ms {
        let id = id_of(conn, "modulesets", &ms.name)?;
        for (pos, m) in ms.modules.iter().enumerate() {
            conn.prepare_cached(
                "INSERT INTO moduleset_modules (moduleset_id, position, name, autofix) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, pos as i64, m.name, m.autofix])?;
        }
        for (pos, child) in ms.children.iter().enumerate() {
            let child_id = id_of(conn, "modulesets", child)?;
            conn.prepare_cached(
                "INSERT INTO moduleset_children (parent_id, child_id, position) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, child_id, pos as i64])?;
        }
        for (pos, rs) in ms.rulesets.iter().enumerate() {
            let rs_id = id_of(conn, "rulesets", rs)?;
            conn.prepare_cached(
                "INSERT INTO moduleset_rulesets (moduleset_id, ruleset_id, position) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, rs_id, pos as i64])?;
        }
    }
    Ok(())
}
