-- Delete an object in a way that converges: empty it into the next epoch. Every region that
-- receives the epoch drops what it holds of older epochs (delete wins over concurrent
-- writes); writes made after it are kept. A tombstone (#t, #E and the index entry) remains.
-- KEYS, ARGV[1..6]: see _prelude.lua (ARGV[1] may be '' to delete whatever type it is).
-- Returns {the new epoch, epoch, note}
local ok = open()
if type(ok) == 'table' then return ok end
wipe(dec_add(EPOCH, '1'))
return reply(EPOCH)
