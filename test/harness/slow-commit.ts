/**
 * A table whose COMMIT takes half a second for rows whose body starts with 'slow': a deferred
 * constraint trigger sleeps at commit time, so a test can land a fault while COMMIT is running.
 */
export const SLOW_COMMIT_SCHEMA = `
  CREATE TABLE entries (id int primary key, body text);
  CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    IF NEW.body LIKE 'slow%' THEN PERFORM pg_sleep(0.5); END IF;
    RETURN NULL;
  END $$;
  CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON entries DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION slow_commit();
`;
