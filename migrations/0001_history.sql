-- Match history: every completed match and every player's final line in it, written by
-- the history writer (one writer at a time) from the deltas stream. Rows are replaced
-- as a whole when a newer version of a match arrives (a late correction), never by an
-- older one.

CREATE TABLE matches (
    match_id        text PRIMARY KEY,
    map_name        text,
    game_mode       text,
    max_players     integer,
    start_time      timestamptz NOT NULL,
    end_time        timestamptz NOT NULL,
    duration_ms     bigint NOT NULL,
    -- match_end (a game server ended it), idle_timeout (the service did), or null (not
    -- known: backfilled from the completed-matches bucket).
    end_reason      text,
    -- The match version (event_count) these rows are of.
    version         bigint NOT NULL,
    player_count    integer NOT NULL,
    total_kills     bigint NOT NULL,
    total_deaths    bigint NOT NULL,
    total_assists   bigint NOT NULL,
    total_damage    double precision NOT NULL,
    total_healing   double precision NOT NULL,
    first_blood     jsonb,
    written_at      timestamptz NOT NULL DEFAULT now()
);

-- Boards over a period and a game mode.
CREATE INDEX matches_by_end ON matches (end_time);

CREATE TABLE match_players (
    match_id            text NOT NULL REFERENCES matches (match_id) ON DELETE CASCADE,
    player_id           text NOT NULL,
    -- The match's, copied: a player's history and boards filter and order by them
    -- without a join.
    end_time            timestamptz NOT NULL,
    game_mode           text,
    map_name            text,
    player_name         text,
    team_id             text,
    kills               bigint NOT NULL,
    deaths              bigint NOT NULL,
    assists             bigint NOT NULL,
    suicides            bigint NOT NULL,
    score               bigint NOT NULL,
    damage_dealt        double precision NOT NULL,
    damage_received     double precision NOT NULL,
    healing_done        double precision NOT NULL,
    shots_fired         bigint NOT NULL,
    shots_hit           bigint NOT NULL,
    accuracy_pct        double precision NOT NULL,
    headshots           bigint NOT NULL,
    longshots           bigint NOT NULL,
    multikills          bigint NOT NULL,
    best_multikill      bigint NOT NULL,
    current_streak      bigint NOT NULL,
    best_streak         bigint NOT NULL,
    kd_ratio            double precision NOT NULL,
    kda                 double precision NOT NULL,
    performance_rating  double precision NOT NULL,
    playtime_ms         bigint NOT NULL,
    distance_traveled   double precision NOT NULL,
    avg_speed           double precision NOT NULL,
    weapon_used         jsonb NOT NULL,
    items_used          jsonb NOT NULL,
    current_x           double precision,
    current_y           double precision,
    current_z           double precision,
    PRIMARY KEY (match_id, player_id)
);

-- A player's matches, newest first, and their career over a period.
CREATE INDEX match_players_by_player ON match_players (player_id, end_time DESC, match_id DESC);
-- Boards over a period: the period's rows, then grouped by player.
CREATE INDEX match_players_by_end ON match_players (end_time);

-- One row: whether the first start's backfill from the completed-matches bucket is done.
CREATE TABLE history_state (
    id                  boolean PRIMARY KEY DEFAULT true CHECK (id),
    backfilled_at       timestamptz
);
INSERT INTO history_state (id) VALUES (true);

-- Players whose history was erased on request: their lines are never written again (a
-- late correction of one of their matches leaves them out). Only the id is kept.
CREATE TABLE erased_players (
    player_id   text PRIMARY KEY,
    erased_at   timestamptz NOT NULL DEFAULT now()
);
