// Written to match both `migrations/postgres` and `migrations/sqlite`; the column
// types are the ones both backends share.

diesel::table! {
    events (seq) {
        seq -> BigInt,
        id -> Text,
        pubkey -> Text,
        created_at -> BigInt,
        kind -> Integer,
        tags -> Text,
        content -> Text,
        sig -> Text,
        first_seen -> BigInt,
        aggregated -> Bool,
        address -> Nullable<Text>,
        expires_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    event_tags (event_seq, name, value) {
        event_seq -> BigInt,
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    event_stats (event_id) {
        event_id -> Text,
        reactions -> BigInt,
        replies -> BigInt,
        reposts -> BigInt,
        zaps -> BigInt,
        zap_msats -> BigInt,
    }
}

diesel::table! {
    relay_cursors (relay, filter) {
        relay -> Text,
        filter -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    relay_state (relay, filter) {
        relay -> Text,
        filter -> Text,
        last_success -> Nullable<BigInt>,
        last_failure -> Nullable<BigInt>,
        consecutive_failures -> BigInt,
        last_error -> Nullable<Text>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    replaceable_heads (address) {
        address -> Text,
        created_at -> BigInt,
        id -> Text,
    }
}

diesel::table! {
    deleted_events (id, pubkey) {
        id -> Text,
        pubkey -> Text,
        added_at -> BigInt,
        seen -> Bool,
    }
}

diesel::table! {
    deleted_addresses (address) {
        address -> Text,
        until -> BigInt,
        added_at -> BigInt,
    }
}

diesel::table! {
    tombstone_sweep (id) {
        id -> Integer,
        swept_to -> BigInt,
        unseen -> BigInt,
    }
}

diesel::table! {
    retractions (seq) {
        seq -> BigInt,
        target -> Text,
        reactions -> BigInt,
        replies -> BigInt,
        reposts -> BigInt,
        zaps -> BigInt,
        zap_msats -> BigInt,
    }
}

diesel::table! {
    zap_servers (recipient) {
        recipient -> Text,
        server -> Nullable<Text>,
        checked_at -> BigInt,
        keys -> Text,
        next_check -> Nullable<BigInt>,
        failures -> Integer,
    }
}

diesel::table! {
    zap_pending (seq) {
        seq -> BigInt,
        recipient -> Text,
        target -> Text,
    }
}

diesel::table! {
    zap_counted (id) {
        id -> Text,
    }
}

diesel::table! {
    fingerprints (relay_id, second, kind) {
        second -> BigInt,
        kind -> Integer,
        n -> BigInt,
        l0 -> BigInt,
        l1 -> BigInt,
        l2 -> BigInt,
        l3 -> BigInt,
        l4 -> BigInt,
        l5 -> BigInt,
        l6 -> BigInt,
        l7 -> BigInt,
        relay_id -> Integer,
    }
}

diesel::table! {
    relays (url) {
        url -> Text,
        source -> Text,
        enabled -> Bool,
        paused -> Bool,
        settings -> Text,
        added_at -> BigInt,
        holder -> Nullable<Text>,
        token -> BigInt,
        lease_until -> BigInt,
    }
}

diesel::table! {
    instances (id) {
        id -> Text,
        started_at -> BigInt,
        heartbeat_at -> BigInt,
    }
}

diesel::table! {
    relay_ids (id) {
        id -> Integer,
        url -> Text,
    }
}

diesel::table! {
    event_relays (event_seq, relay_id) {
        event_seq -> BigInt,
        relay_id -> Integer,
        first_seen -> BigInt,
    }
}

diesel::table! {
    relay_scores (url) {
        url -> Text,
        novel -> BigInt,
        duplicates -> BigInt,
        failures -> BigInt,
        failures_in_row -> BigInt,
        uptime -> Double,
        score -> Double,
        blocked_until -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::joinable!(event_tags -> events (event_seq));
diesel::joinable!(event_relays -> events (event_seq));
diesel::joinable!(event_relays -> relay_ids (relay_id));
diesel::allow_tables_to_appear_in_same_query!(
    events,
    event_tags,
    event_stats,
    relay_cursors,
    relay_state,
    replaceable_heads,
    deleted_events,
    deleted_addresses,
    retractions,
    zap_servers,
    zap_pending,
    zap_counted,
    tombstone_sweep,
    fingerprints,
    relays,
    instances,
    relay_ids,
    event_relays,
    relay_scores
);
