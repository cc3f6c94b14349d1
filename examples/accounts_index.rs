//! What the organization index buys: an organization's users (100 of 2,000 on the box)
//! listed through `org_members` against the full scan of every user record that
//! `Store::users_of` did before schema 3, the admin count the last-admin rule reads, and a
//! role change's transaction (not flushed).
//!
//! Run: `cargo run --release --example accounts_index`.

use std::time::Instant;
use tally::auth::Role;
use tally::store::{NewUser, Store};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut orgs = Vec::new();
    for o in 0..20 {
        let org = store.create_org(&format!("org{o}")).unwrap();
        for u in 0..100 {
            let role = if u < 2 { Role::Admin } else { Role::Editor };
            store
                .create_user(NewUser {
                    org_id: &org.id,
                    email: &format!("u{u}@o{o}"),
                    role,
                    password_hash: "x".repeat(97),
                })
                .unwrap();
        }
        orgs.push(org);
    }
    store.durable_blocking().unwrap();
    let org = &orgs[7];
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(store.users_of(&org.id).unwrap().len(), 100);
    }
    println!("users_of (100 of 2000 users): {:.3} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(store.admin_count(&org.id).unwrap(), 2);
    }
    println!("admin_count: {:.3} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let users = store.users_of(&org.id).unwrap();
    let (a, target) = (&users[0].id, &users[10].id);
    let t = Instant::now();
    for i in 0..n {
        store.set_role(&org.id, a, target, if i % 2 == 0 { Role::Viewer } else { Role::Editor }).unwrap();
    }
    println!("set_role (transaction, not flushed): {:.3} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let org_id = org.id.clone();
    drop(users);
    drop(store);
    std::thread::sleep(std::time::Duration::from_secs(1));
    // What users_of did before: every user record decoded, kept if of the organization.
    let db = loop {
        match sled::open(dir.path().join("db")) {
            Ok(db) => break db,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    let tree = db.open_tree("users").unwrap();
    let t = Instant::now();
    for _ in 0..200 {
        let mut kept = 0;
        for entry in tree.iter() {
            let user: tally::store::User = serde_json::from_slice(&entry.unwrap().1).unwrap();
            kept += usize::from(user.org_id == org_id);
        }
        assert_eq!(kept, 100);
    }
    println!("full scan (before): {:.3} ms", t.elapsed().as_secs_f64() * 1000.0 / 200.0);
}
