-- Room on each page for the updates the stages make to every row, so they stay HOT (a new row version on the same
-- page, no index entries). The identity stage moves each known identifier's first/last seen times in every batch
-- that sees it, and the profile stage rewrites each touched profile's state: at fillfactor 80 about half of those
-- updates found their page full and added an entry to every index (the pipeline benchmark: 46% HOT for
-- cdp.identity_nodes; at 50, 99.9%, and the identity stage's seen-times step 2.5x faster). The tables take more
-- space; pages written before this migration keep their old filling until rewritten (`VACUUM FULL` or CLUSTER, both
-- of which lock the table; `tributary identity rebuild` does not rewrite it).
ALTER TABLE cdp.identity_nodes SET (fillfactor = 50);
ALTER TABLE cdp.profile_data SET (fillfactor = 50);
