-- Each player's totals over all their matches, per game mode and over every mode
-- (game_mode '*'; a match without a mode counts under ''), kept by the history writer in
-- the same transaction as the lines: all-time boards read these rows instead of
-- aggregating every line. A rewritten match (a late correction) subtracts its old lines
-- and adds its new ones; best_streak and best_multikill only ever grow (a correction that
-- lowers a player's best is not taken back until their history is rebuilt).

CREATE TABLE player_totals (
    player_id           text NOT NULL,
    game_mode           text NOT NULL,
    player_name         text,
    matches             bigint NOT NULL,
    kills               bigint NOT NULL,
    deaths              bigint NOT NULL,
    assists             bigint NOT NULL,
    score               bigint NOT NULL,
    damage_dealt        double precision NOT NULL,
    damage_received     double precision NOT NULL,
    healing_done        double precision NOT NULL,
    shots_fired         bigint NOT NULL,
    shots_hit           bigint NOT NULL,
    headshots           bigint NOT NULL,
    multikills          bigint NOT NULL,
    best_streak         bigint NOT NULL,
    best_multikill      bigint NOT NULL,
    playtime_ms         bigint NOT NULL,
    distance_traveled   double precision NOT NULL,
    PRIMARY KEY (game_mode, player_id)
);

INSERT INTO player_totals
SELECT player_id, mode, (array_agg(player_name ORDER BY end_time DESC))[1], count(*),
       sum(kills), sum(deaths), sum(assists), sum(score), sum(damage_dealt),
       sum(damage_received), sum(healing_done), sum(shots_fired), sum(shots_hit),
       sum(headshots), sum(multikills), max(best_streak), max(best_multikill),
       sum(playtime_ms), sum(distance_traveled)
FROM match_players, LATERAL (VALUES (coalesce(game_mode, '')), ('*')) AS modes (mode)
GROUP BY player_id, mode;
