using System.Data;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Npgsql;
using NpgsqlTypes;
using Pooler.Actors.Pooling;
using Pooler.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace Pooler.Tests.Integration;

/// <summary>
/// The PostgreSQL protocol through the pooler: simple and extended queries, pipelined batches, COPY in both
/// directions, notices, errors inside transactions, psql scripts, and a large result streamed without buffering.
/// </summary>
[Collection(PostgresCollection.Name)]
public class ProtocolTests(PostgresFixture pg, ITestOutputHelper output)
{
    private const string PoolKey = PostgresFixture.Database + "/" + PostgresFixture.ScramUser;

    private static string TableName(string prefix) => $"{prefix}_{Guid.NewGuid():N}"[..(prefix.Length + 13)];

    private static async Task<Pool.Stats> StatsAsync(PoolerHarness p, string key = PoolKey)
    {
        var all = await p.PoolStatsAsync();
        Assert.True(all.TryGetValue(key, out var s), $"no pool {key}; pools: {string.Join(", ", all.Keys)}");
        return s!;
    }

    private static Task ActiveServersBackToZeroAsync(PoolerHarness p, string because)
        => Eventually.Value(() => StatsAsync(p), s => s.Active == 0, $"the server goes back to the pool {because}");

    private static async Task<object?> ScalarAsync(NpgsqlConnection c, string sql)
    {
        await using var cmd = new NpgsqlCommand(sql, c);
        return await cmd.ExecuteScalarAsync();
    }

    // ---------------- simple query ----------------

    [Fact]
    public async Task Simple_query_with_several_statements_returns_every_result_and_one_ReadyForQuery()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "auth.type = plain");
        await using var raw = await RawPgConnection.ConnectAsync(p.Port, PostgresFixture.ScramUser, PostgresFixture.Database, PostgresFixture.ScramPassword);

        var answer = await raw.QueryAsync("select 1 as a; select 'two' as b; select g from generate_series(1, 3) g");
        Assert.Equal(3, answer.Count(m => m.Type == 'T'));
        Assert.Equal(3, answer.Count(m => m.Type == 'C'));
        Assert.Equal(["1", "two", "1", "2", "3"], answer.Where(m => m.Type == 'D').Select(m => m.FirstColumn()));
        Assert.Single(answer, m => m.Type == 'Z');
        Assert.Equal((byte)'I', answer[^1].Body[0]);

        // an error in the middle: later statements are skipped, one ErrorResponse, one ReadyForQuery, the session goes on
        var failed = await raw.QueryAsync("select 1; select 1/0; select 3");
        var error = Assert.Single(failed, m => m.Type == 'E');
        Assert.Equal("22012", error.Fields()['C']);
        Assert.Equal(["1"], failed.Where(m => m.Type == 'D').Select(m => m.FirstColumn()));
        Assert.Equal('Z', failed[^1].Type);
        Assert.Equal("after", await raw.ScalarAsync("select 'after'"));

        // the same through psql -c (one Query message with three statements)
        var r = pg.RunPsqlCommand("select 1; select 'two'; select 3", PostgresFixture.ScramUser, port: p.Port);
        Assert.True(r.Succeeded, r.ToString());
        Assert.Equal(["1", "two", "3"], r.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries));

        await raw.TerminateAsync();
        await ActiveServersBackToZeroAsync(p, "after the simple queries");
    }

    [Fact]
    public async Task Npgsql_multi_statement_command_returns_each_result_set()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        await using var c = await p.OpenAsync();
        await using var cmd = new NpgsqlCommand("select 1; select 'two'; select g from generate_series(1, 3) g", c);
        await using var reader = await cmd.ExecuteReaderAsync();
        var sets = new List<List<string>>();
        do
        {
            var rows = new List<string>();
            while (await reader.ReadAsync()) rows.Add(Convert.ToString(reader.GetValue(0), CultureInfo.InvariantCulture)!);
            sets.Add(rows);
        } while (await reader.NextResultAsync());
        Assert.Equal(3, sets.Count);
        Assert.Equal(["1"], sets[0]);
        Assert.Equal(["two"], sets[1]);
        Assert.Equal(["1", "2", "3"], sets[2]);
    }

    // ---------------- extended protocol ----------------

    [Fact]
    public async Task Extended_protocol_with_parameters_of_many_types_round_trips()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        await using var c = await p.OpenAsync();

        var ts = new DateTime(2024, 2, 29, 13, 45, 10, 123, DateTimeKind.Unspecified);
        var tstz = new DateTime(2024, 2, 29, 13, 45, 10, 123, DateTimeKind.Utc);
        var uuid = Guid.NewGuid();
        var bytes = RandomNumberGenerator.GetBytes(300);
        var values = new (string Name, object Value, NpgsqlDbType Type)[]
        {
            ("i2", (short)-12345, NpgsqlDbType.Smallint),
            ("i4", int.MinValue, NpgsqlDbType.Integer),
            ("i8", long.MaxValue, NpgsqlDbType.Bigint),
            ("f4", 1.5f, NpgsqlDbType.Real),
            ("f8", Math.PI, NpgsqlDbType.Double),
            ("num", 12345678901234567890.123456789m, NpgsqlDbType.Numeric),
            ("txt", "héllo wörld ✓ 'quoted' \"double\"", NpgsqlDbType.Text),
            ("b", true, NpgsqlDbType.Boolean),
            ("bin", bytes, NpgsqlDbType.Bytea),
            ("id", uuid, NpgsqlDbType.Uuid),
            ("ts", ts, NpgsqlDbType.Timestamp),
            ("tstz", tstz, NpgsqlDbType.TimestampTz),
            ("d", new DateOnly(1999, 12, 31), NpgsqlDbType.Date),
            ("iv", new TimeSpan(3, 4, 5, 6), NpgsqlDbType.Interval),
            ("js", """{"a": [1, 2, {"b": null}]}""", NpgsqlDbType.Jsonb),
            ("arr", new[] { 1, 2, 3, -4 }, NpgsqlDbType.Array | NpgsqlDbType.Integer),
            ("tarr", new[] { "x", "", "z" }, NpgsqlDbType.Array | NpgsqlDbType.Text),
        };
        await using (var cmd = new NpgsqlCommand("select " + string.Join(", ", values.Select(v => "@" + v.Name)) + ", @nul::text", c))
        {
            foreach (var (name, value, type) in values) cmd.Parameters.Add(new NpgsqlParameter(name, type) { Value = value });
            cmd.Parameters.Add(new NpgsqlParameter("nul", NpgsqlDbType.Text) { Value = DBNull.Value });
            await using var reader = await cmd.ExecuteReaderAsync();
            Assert.True(await reader.ReadAsync());
            Assert.Equal((short)-12345, reader.GetInt16(0));
            Assert.Equal(int.MinValue, reader.GetInt32(1));
            Assert.Equal(long.MaxValue, reader.GetInt64(2));
            Assert.Equal(1.5f, reader.GetFloat(3));
            Assert.Equal(Math.PI, reader.GetDouble(4));
            Assert.Equal(12345678901234567890.123456789m, reader.GetDecimal(5));
            Assert.Equal("héllo wörld ✓ 'quoted' \"double\"", reader.GetString(6));
            Assert.True(reader.GetBoolean(7));
            Assert.Equal(bytes, reader.GetFieldValue<byte[]>(8));
            Assert.Equal(uuid, reader.GetGuid(9));
            Assert.Equal(ts, reader.GetDateTime(10));
            Assert.Equal(tstz, reader.GetFieldValue<DateTime>(11).ToUniversalTime());
            Assert.Equal(new DateOnly(1999, 12, 31), reader.GetFieldValue<DateOnly>(12));
            Assert.Equal(new TimeSpan(3, 4, 5, 6), reader.GetTimeSpan(13));
            Assert.Equal("""{"a": [1, 2, {"b": null}]}""", reader.GetString(14));
            Assert.Equal([1, 2, 3, -4], reader.GetFieldValue<int[]>(15));
            Assert.Equal(["x", "", "z"], reader.GetFieldValue<string[]>(16));
            Assert.True(reader.IsDBNull(17));
            Assert.False(await reader.ReadAsync());
        }

        // a parameter far larger than the socket buffers (the pooler relays it in many chunks)
        var big = RandomNumberGenerator.GetBytes(5 * 1024 * 1024);
        await using (var cmd = new NpgsqlCommand("select md5(@b), length(@b)", c))
        {
            cmd.Parameters.Add(new NpgsqlParameter("b", NpgsqlDbType.Bytea) { Value = big });
            await using var reader = await cmd.ExecuteReaderAsync();
            Assert.True(await reader.ReadAsync());
            Assert.Equal(Convert.ToHexStringLower(MD5.HashData(big)), reader.GetString(0));
            Assert.Equal(big.Length, reader.GetInt32(1));
        }

        // many unnamed statements in a row, each its own transaction (and possibly its own server)
        for (var i = 0; i < 200; i++)
        {
            await using var cmd = new NpgsqlCommand("select @x::int * 2, @y::text || '!'", c);
            cmd.Parameters.AddWithValue("x", i);
            cmd.Parameters.AddWithValue("y", "n" + i);
            await using var reader = await cmd.ExecuteReaderAsync();
            Assert.True(await reader.ReadAsync());
            Assert.Equal(i * 2, reader.GetInt32(0));
            Assert.Equal($"n{i}!", reader.GetString(1));
        }
        await ActiveServersBackToZeroAsync(p, "after the extended-protocol queries");
    }

    [Fact]
    public async Task Prepared_statement_inside_a_transaction_works()
    {
        // named statements live on one server: inside a transaction they are safe even in transaction mode
        await using var p = await PoolerHarness.StartAsync(pg);
        await using var c = await p.OpenAsync();
        await using var tx = await c.BeginTransactionAsync();
        await using var cmd = new NpgsqlCommand("select @a::int + 1", c, tx);
        cmd.Parameters.Add(new NpgsqlParameter("a", NpgsqlDbType.Integer));
        await cmd.PrepareAsync();
        for (var i = 0; i < 20; i++)
        {
            cmd.Parameters["a"].Value = i;
            Assert.Equal(i + 1, await cmd.ExecuteScalarAsync());
        }
        await tx.CommitAsync();
    }

    // ---------------- pipelined batches ----------------

    [Fact]
    public async Task Npgsql_batch_of_twenty_commands_is_pipelined_and_answered_in_order()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        await using var c = await p.OpenAsync();
        for (var round = 0; round < 5; round++)
        {
            await using var batch = new NpgsqlBatch(c);
            for (var i = 0; i < 20; i++)
            {
                var cmd = new NpgsqlBatchCommand("select @v::int, repeat('x', @v::int)");
                cmd.Parameters.AddWithValue("v", round * 100 + i);
                batch.BatchCommands.Add(cmd);
            }
            await using var reader = await batch.ExecuteReaderAsync();
            for (var i = 0; i < 20; i++)
            {
                Assert.True(await reader.ReadAsync(), $"row of command {i}");
                Assert.Equal(round * 100 + i, reader.GetInt32(0));
                Assert.Equal(round * 100 + i, reader.GetString(1).Length);
                Assert.False(await reader.ReadAsync());
                Assert.Equal(i < 19, await reader.NextResultAsync());
            }
        }
        await ActiveServersBackToZeroAsync(p, "after the batches");
    }

    [Fact]
    public async Task Batch_with_a_failing_command_reports_the_error_and_the_server_goes_back_to_the_pool()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        var table = TableName("batchfail");
        await using var c = await p.OpenAsync();
        await ScalarAsync(c, $"create table {table} (id int)");
        try
        {
            await using (var batch = new NpgsqlBatch(c))
            {
                for (var i = 0; i < 20; i++)
                    batch.BatchCommands.Add(new NpgsqlBatchCommand(i == 10 ? "select 1/0" : $"insert into {table} values ({i}) returning id"));
                var completed = 0;
                var e = await Assert.ThrowsAsync<PostgresException>(async () =>
                {
                    await using var reader = await batch.ExecuteReaderAsync();
                    completed++;
                    for (var i = 0; i < 30 && await reader.NextResultAsync(); i++) completed++;
                });
                Assert.Equal("22012", e.SqlState);
                Assert.Equal(10, completed); // commands 0..9 answered, command 10 failed
            }

            // the batch ran as one implicit transaction: the inserts before the error are rolled back
            Assert.Equal(0L, await ScalarAsync(c, $"select count(*) from {table}"));
            Assert.Equal(42, await ScalarAsync(c, "select 42"));
            await ActiveServersBackToZeroAsync(p, "after the failed batch");

            // and a later batch on the same connection works
            await using (var batch = new NpgsqlBatch(c))
            {
                for (var i = 0; i < 20; i++) batch.BatchCommands.Add(new NpgsqlBatchCommand($"insert into {table} values ({i})"));
                await batch.ExecuteNonQueryAsync();
            }
            Assert.Equal(20L, await ScalarAsync(c, $"select count(*) from {table}"));
        }
        finally
        {
            await DropQuietlyAsync(table);
        }
        await ActiveServersBackToZeroAsync(p, "at the end");
    }

    // ---------------- COPY ----------------

    [Fact]
    public async Task Copy_from_stdin_binary_and_text_imports_every_row()
    {
        const int rows = 100_000;
        await using var p = await PoolerHarness.StartAsync(pg);
        var table = TableName("copyin");
        await using var c = await p.OpenAsync();
        await ScalarAsync(c, $"create table {table} (id int, name text, v float8)");
        try
        {
            await using (var importer = await c.BeginBinaryImportAsync($"COPY {table} (id, name, v) FROM STDIN (FORMAT BINARY)"))
            {
                for (var i = 1; i <= rows; i++)
                {
                    await importer.StartRowAsync();
                    await importer.WriteAsync(i, NpgsqlDbType.Integer);
                    await importer.WriteAsync("name " + i, NpgsqlDbType.Text);
                    await importer.WriteAsync(i / 2.0, NpgsqlDbType.Double);
                }
                Assert.Equal((ulong)rows, await importer.CompleteAsync());
            }
            Assert.Equal((long)rows, await ScalarAsync(c, $"select count(*) from {table}"));
            Assert.Equal((long)rows * (rows + 1) / 2, await ScalarAsync(c, $"select sum(id) from {table}"));
            Assert.Equal("name 77777", await ScalarAsync(c, $"select name from {table} where id = 77777"));
            await ActiveServersBackToZeroAsync(p, "after the binary COPY");

            await using (var writer = await c.BeginTextImportAsync($"COPY {table} (id, name, v) FROM STDIN"))
            {
                for (var i = rows + 1; i <= 2 * rows; i++)
                    await writer.WriteAsync($"{i}\ttext {i}\t{i}.25\n");
            }
            Assert.Equal(2L * rows, await ScalarAsync(c, $"select count(*) from {table}"));
            Assert.Equal((long)rows, await ScalarAsync(c, $"select count(*) from {table} where name like 'text %'"));
            Assert.Equal(2.0 * rows + 0.25, await ScalarAsync(c, $"select max(v) from {table}"));
            await ActiveServersBackToZeroAsync(p, "after the text COPY");

            // an import abandoned by the client (CopyFail) leaves nothing behind and the connection usable
            await using (var importer = await c.BeginBinaryImportAsync($"COPY {table} (id) FROM STDIN (FORMAT BINARY)"))
            {
                for (var i = 0; i < 1000; i++) await importer.WriteRowAsync(default, -i);
                // disposed without Complete: Npgsql sends CopyFail
            }
            Assert.Equal(0L, await ScalarAsync(c, $"select count(*) from {table} where id <= 0"));
            Assert.Equal(2L * rows, await ScalarAsync(c, $"select count(*) from {table}"));
        }
        finally
        {
            await DropQuietlyAsync(table);
        }
        await ActiveServersBackToZeroAsync(p, "at the end");
    }

    /// <summary>
    /// PostgreSQL rejects a row in the middle of a COPY FROM STDIN and answers ErrorResponse + ReadyForQuery while the
    /// client is still streaming CopyData. In transaction mode the server is released at that ReadyForQuery: whatever the
    /// client sends afterwards must not reach the server once the next client uses it (PostgreSQL ignores stray CopyData
    /// messages, but a message cut in half would swallow the next client's bytes).
    /// </summary>
    [Fact]
    public async Task Copy_failing_mid_stream_leaves_the_server_clean_for_the_next_client()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "default-pool-size = 1");
        var table = TableName("copyfail");
        await using var a = await p.OpenAsync();
        await using var b = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(p.ConnectionString()) { CommandTimeout = 20 }.ConnectionString);
        await b.OpenAsync();
        await ScalarAsync(a, $"create table {table} (id int check (id < 5000), pad text)");
        try
        {
            for (var round = 0; round < 8; round++)
            {
                var importer = await a.BeginBinaryImportAsync($"COPY {table} (id, pad) FROM STDIN (FORMAT BINARY)");
                // b queues for the only server, which a's COPY holds
                var bQuery = ScalarAsync(b, $"select 'b-ok-{round}'");
                await Eventually.Value(() => StatsAsync(p), s => s.Waiting == 1, "b waits for the server");

                var pad = new string('p', 50 + round * 7);
                var copyError = await Assert.ThrowsAnyAsync<Exception>(async () =>
                {
                    await using (importer)
                    {
                        for (var i = 1; i <= 100_000; i++)
                        {
                            await importer.StartRowAsync();
                            await importer.WriteAsync(i, NpgsqlDbType.Integer);
                            await importer.WriteAsync(pad, NpgsqlDbType.Text);
                        }
                        await importer.CompleteAsync();
                    }
                });
                output.WriteLine($"round {round}: a's COPY ended with {copyError.GetType().Name}: {copyError.Message}");
                Assert.Equal("23514", Assert.IsType<PostgresException>(copyError).SqlState);

                // b got the server after a's COPY failed: its query must be answered, and correctly
                var answered = await Task.WhenAny(bQuery, Task.Delay(TimeSpan.FromSeconds(15))) == bQuery;
                Assert.True(answered, $"round {round}: b's query got no answer within 15 s; the server: {await BackendsAsync(PostgresFixture.ScramUser)}");
                Assert.Equal($"b-ok-{round}", await bQuery);
                Assert.Equal("b again", await ScalarAsync(b, "select 'b again'").WaitAsync(TimeSpan.FromSeconds(15)));
                Assert.Equal("a again", await ScalarAsync(a, "select 'a again'").WaitAsync(TimeSpan.FromSeconds(15)));
            }
            Assert.Equal(0L, await ScalarAsync(a, $"select count(*) from {table}"));
        }
        finally
        {
            await DropQuietlyAsync(table);
        }
    }

    /// <summary>
    /// The deterministic form of the test above: a raw client sends, in one write, a CopyData with a bad row and the first
    /// bytes of a second CopyData message. PostgreSQL fails the COPY (22P02), answers ErrorResponse + ReadyForQuery, and then
    /// waits for the rest of the cut message. The next client on that server must not have its query eaten by it.
    /// </summary>
    [Fact]
    public async Task Copy_failing_with_a_cut_CopyData_message_does_not_swallow_the_next_clients_query()
    {
        await using var p = await PoolerHarness.StartAsync(pg, "auth.type = plain\ndefault-pool-size = 1");
        var table = TableName("copycut");
        await using var a = await RawPgConnection.ConnectAsync(p.Port, PostgresFixture.ScramUser, PostgresFixture.Database, PostgresFixture.ScramPassword);
        await using var b = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(p.ConnectionString()) { CommandTimeout = 10 }.ConnectionString);
        await b.OpenAsync();
        try
        {
            Assert.DoesNotContain(await a.QueryAsync($"create table {table} (id int)"), m => m.Type == 'E');
            await a.SendQueryAsync($"COPY {table} (id) FROM STDIN");
            Assert.Equal('G', (await a.ReadAsync()).Type); // CopyInResponse: a holds the only server

            var bQuery = ScalarAsync(b, "select 'b-ok'");
            await Eventually.Value(() => StatsAsync(p), s => s.Waiting == 1, "b waits for the server");

            var bad = System.Text.Encoding.ASCII.GetBytes("1\n2\nnot a number\n");
            var stream = new MemoryStream();
            stream.WriteByte((byte)'d');
            stream.Write(BigEndian(4 + bad.Length));
            stream.Write(bad);
            stream.WriteByte((byte)'d');                  // the next CopyData: header and 10 of its 1000 bytes
            stream.Write(BigEndian(4 + 1000));
            stream.Write(System.Text.Encoding.ASCII.GetBytes("3\n4\n5\n6\n7\n"));
            await a.WriteRawAsync(stream.ToArray());

            var answer = await a.ReadUntilReadyAsync();
            var error = Assert.Single(answer, m => m.Type == 'E');
            Assert.Equal("22P02", error.Fields()['C']);

            object? bAnswer = null;
            Exception? bError = null;
            var watch = Stopwatch.StartNew();
            var backends = "";
            if (await Task.WhenAny(bQuery, Task.Delay(TimeSpan.FromSeconds(5))) != bQuery)
                backends = await BackendsAsync(PostgresFixture.ScramUser); // while b still waits
            try { bAnswer = await bQuery.WaitAsync(TimeSpan.FromSeconds(15)); }
            catch (Exception e) { bError = e; }
            Assert.True(bError == null && "b-ok".Equals(bAnswer),
                $"b's query, the first on the server after a's failed COPY, got {(bError != null ? $"{bError.GetType().Name}: {bError.Message}" : bAnswer)} " +
                $"after {watch.Elapsed.TotalSeconds:0.0} s; backends 5 s after a's COPY failed: {backends}");
            Assert.Equal("b again", await ScalarAsync(b, "select 'b again'"));
        }
        finally
        {
            await DropQuietlyAsync(table);
        }
    }

    private static byte[] BigEndian(int value)
    {
        var bytes = new byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(bytes, value);
        return bytes;
    }

    /// <summary>Drops a test table as the superuser: best effort, never masking the test's own failure.</summary>
    private async Task DropQuietlyAsync(string table)
    {
        try { await pg.ExecuteAsync($"set lock_timeout = '3s'; drop table if exists {table}", PostgresFixture.Database); }
        catch (Exception e) { output.WriteLine($"cleanup of {table}: {e.Message}"); }
    }

    /// <summary>What PostgreSQL's backends of a user are doing (for failure messages).</summary>
    private async Task<string> BackendsAsync(string user)
    {
        await using var admin = new NpgsqlConnection(pg.SuperuserConnectionString());
        await admin.OpenAsync();
        await using var cmd = new NpgsqlCommand(
            "select string_agg(format('pid %s state %s wait %s/%s last query: %s', pid, state, wait_event_type, wait_event, left(query, 60)), '; ') " +
            "from pg_stat_activity where usename = @u", admin);
        cmd.Parameters.AddWithValue("u", user);
        return (await cmd.ExecuteScalarAsync()) as string ?? "(none)";
    }

    [Fact]
    public async Task Copy_to_stdout_through_Npgsql_and_psql_returns_every_row()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        await using (var c = await p.OpenAsync())
        {
            using var reader = await c.BeginTextExportAsync("COPY (select g, 'row ' || g from generate_series(1, 100000) g) TO STDOUT");
            var count = 0;
            string? first = null, last = null;
            for (var line = await reader.ReadLineAsync(); line != null; line = await reader.ReadLineAsync())
            {
                count++;
                first ??= line;
                last = line;
            }
            Assert.Equal(100_000, count);
            Assert.Equal("1\trow 1", first);
            Assert.Equal("100000\trow 100000", last);
        }
        await ActiveServersBackToZeroAsync(p, "after COPY TO STDOUT");

        var r = await pg.RunPsqlAsync(["-v", "ON_ERROR_STOP=1", "-At", "-c", @"\copy (select g, md5(g::text) from generate_series(1, 50000) g) to stdout"],
            PostgresFixture.ScramUser, port: p.Port);
        Assert.True(r.Succeeded, r.ToString());
        var lines = r.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(50_000, lines.Length);
        Assert.Equal("1\t" + Convert.ToHexStringLower(MD5.HashData("1"u8)), lines[0]);
        Assert.StartsWith("50000\t", lines[^1]);
    }

    // ---------------- notices, errors in transactions ----------------

    [Fact]
    public async Task Notices_reach_the_Npgsql_Notice_event()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        await using var c = await p.OpenAsync();
        var notices = new List<PostgresNotice>();
        c.Notice += (_, e) => { lock (notices) notices.Add(e.Notice); };
        await ScalarAsync(c, "DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful: %', 'x'; END $$");
        Assert.Equal(7, await ScalarAsync(c, "select 7"));
        lock (notices)
        {
            Assert.Equal(2, notices.Count);
            Assert.Equal("hello 42", notices[0].MessageText);
            Assert.Equal("NOTICE", notices[0].InvariantSeverity);
            Assert.Equal("careful: x", notices[1].MessageText);
            Assert.Equal("WARNING", notices[1].InvariantSeverity);
        }
    }

    [Fact]
    public async Task Error_inside_an_explicit_transaction_aborts_it_until_rollback()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        var table = TableName("txerr");
        await using var c = await p.OpenAsync();
        await ScalarAsync(c, $"create table {table} (id int)");
        try
        {
            await using (var tx = await c.BeginTransactionAsync())
            {
                await using (var ins = new NpgsqlCommand($"insert into {table} values (1)", c, tx)) await ins.ExecuteNonQueryAsync();
                var e1 = await Assert.ThrowsAsync<PostgresException>(() => new NpgsqlCommand("select 1/0", c, tx).ExecuteScalarAsync());
                Assert.Equal("22012", e1.SqlState);
                var e2 = await Assert.ThrowsAsync<PostgresException>(() => new NpgsqlCommand("select 1", c, tx).ExecuteScalarAsync());
                Assert.Equal("25P02", e2.SqlState);
                // the aborted transaction keeps its server
                Assert.Equal(1, (await StatsAsync(p)).Active);
                await tx.RollbackAsync();
            }
            Assert.Equal(0L, await ScalarAsync(c, $"select count(*) from {table}"));
            await ActiveServersBackToZeroAsync(p, "after ROLLBACK");

            // the same with plain SQL statements
            await ScalarAsync(c, "BEGIN");
            await Assert.ThrowsAsync<PostgresException>(() => ScalarAsync(c, "select * from no_such_table_here"));
            var e3 = await Assert.ThrowsAsync<PostgresException>(() => ScalarAsync(c, $"insert into {table} values (2)"));
            Assert.Equal("25P02", e3.SqlState);
            await ScalarAsync(c, "ROLLBACK");
            Assert.Equal("usable", await ScalarAsync(c, "select 'usable'"));
            Assert.Equal(0L, await ScalarAsync(c, $"select count(*) from {table}"));
        }
        finally
        {
            await DropQuietlyAsync(table);
        }
        await ActiveServersBackToZeroAsync(p, "at the end");
    }

    [Fact]
    public async Task Psql_runs_a_multi_line_script_with_transactions()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        var table = TableName("psqlscript");
        using var dir = TestDirectory.Create("psql-script");
        var script = dir.Combine("script.sql");
        await File.WriteAllTextAsync(script, $"""
            -- a script with multi-line statements and two transactions
            BEGIN;
            CREATE TABLE {table} (
                id   int PRIMARY KEY,
                name text NOT NULL
            );
            INSERT INTO {table}
            VALUES (1, 'one'),
                   (2, 'two');
            SELECT pg_backend_pid() AS tx_pid \gset
            INSERT INTO {table} VALUES (3, 'three');
            SELECT pg_backend_pid() = :tx_pid AS same_server;
            COMMIT;
            SELECT count(*)
              FROM {table};
            BEGIN;
            INSERT INTO {table} VALUES (4, 'four');
            ROLLBACK;
            SELECT string_agg(name, ',' ORDER BY id)
              FROM {table};
            DROP TABLE {table};

            """);
        var r = await pg.RunPsqlAsync(["-v", "ON_ERROR_STOP=1", "-At", "-f", script], PostgresFixture.ScramUser, port: p.Port);
        Assert.True(r.Succeeded, r.ToString());
        var lines = r.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(l => l is not ("BEGIN" or "COMMIT" or "ROLLBACK" or "CREATE TABLE" or "DROP TABLE") && !l.StartsWith("INSERT", StringComparison.Ordinal))
            .ToArray();
        Assert.Equal(["t", "3", "one,two,three"], lines);
        await ActiveServersBackToZeroAsync(p, "after the psql script");
    }

    [Fact]
    public async Task Psql_copy_from_a_file_and_inline_copy_data_import_every_row()
    {
        await using var p = await PoolerHarness.StartAsync(pg);
        var table = TableName("psqlcopy");
        using var dir = TestDirectory.Create("psql-copy");
        var data = dir.Combine("rows.tsv");
        await File.WriteAllLinesAsync(data, Enumerable.Range(1, 100_000).Select(i => $"{i}\tfile {i}"));
        var script = dir.Combine("copy.sql");
        await File.WriteAllTextAsync(script, $"""
            CREATE TABLE {table} (id int, name text);
            \copy {table} from '{data}'
            COPY {table} FROM stdin;
            -1{"\t"}inline one
            -2{"\t"}inline two
            \.
            SELECT count(*), sum(id) FROM {table};

            """);
        try
        {
            var r = await pg.RunPsqlAsync(["-v", "ON_ERROR_STOP=1", "-At", "-q", "-f", script], PostgresFixture.ScramUser, port: p.Port);
            Assert.True(r.Succeeded, r.ToString());
            Assert.Equal($"100002|{100_000L * 100_001 / 2 - 3}", r.StdOut.Trim());
        }
        finally
        {
            await DropQuietlyAsync(table);
        }
        await ActiveServersBackToZeroAsync(p, "after psql's COPY");
    }

    // ---------------- streaming a large result ----------------

    [Fact]
    public async Task Large_result_streams_to_a_slow_reader_without_the_pooler_buffering_it()
    {
        const int rows = 200_000;
        const int width = 1000;
        const long rssLimit = 200L * 1024 * 1024;
        // the relay alone is measured: no HTTP endpoint (Kestrel's own heap) or pbm endpoint in this process
        await using var host = await PoolerProcess.StartAsync(PoolerProcess.DefaultConfig(pg, FreePort.Next(),
            "default-pool-size = 2\nhttp.enabled = off\npbm.enabled = off"));
        await using var c = await host.OpenAsync(pg);
        Assert.Equal(1, await ScalarAsync(c, "select 1")); // warm up: a server is open, the code paths are jitted
        var baseline = host.RssBytes() ?? throw new InvalidOperationException("no RSS for the pooler process");

        long maxRss = baseline;
        var samples = 0;
        using var done = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            for (var i = 0; i < 30_000 && !done.IsCancellationRequested; i++)
            {
                if (host.RssBytes() is { } rss)
                {
                    Interlocked.Exchange(ref maxRss, Math.Max(Interlocked.Read(ref maxRss), rss));
                    Interlocked.Increment(ref samples);
                }
                try { await Task.Delay(20, done.Token); } catch (OperationCanceledException) { }
            }
        });

        // PostgreSQL's side of the backpressure: its backend waits to write to the (pooler's) socket
        var waitEvents = new HashSet<string>();
        var watcher = Task.Run(async () =>
        {
            await using var admin = new NpgsqlConnection(pg.SuperuserConnectionString());
            await admin.OpenAsync();
            for (var i = 0; i < 3000 && !done.IsCancellationRequested; i++)
            {
                await using (var cmd = new NpgsqlCommand(
                    "select coalesce(wait_event, 'running') from pg_stat_activity where query like 'select repeat(%' and pid <> pg_backend_pid()", admin))
                {
                    if (await cmd.ExecuteScalarAsync() is string ev) lock (waitEvents) waitEvents.Add(ev);
                }
                try { await Task.Delay(100, done.Token); } catch (OperationCanceledException) { }
            }
        });

        var watch = Stopwatch.StartNew();
        var count = 0;
        long chars = 0;
        await using (var cmd = new NpgsqlCommand($"select repeat('x', {width}) from generate_series(1, {rows})", c) { CommandTimeout = 300 })
        await using (var reader = await cmd.ExecuteReaderAsync(CommandBehavior.SequentialAccess))
        {
            while (await reader.ReadAsync())
            {
                chars += reader.GetString(0).Length;
                count++;
                // a slow client for the first 40 000 rows (~4 s): PostgreSQL could send everything meanwhile
                if (count < 40_000 && count % 100 == 0) await Task.Delay(10);
            }
        }
        watch.Stop();
        await done.CancelAsync();
        await sampler;
        await watcher;

        output.WriteLine($"read {count} rows in {watch.Elapsed.TotalSeconds:0.0} s; pooler RSS baseline {baseline / 1048576} MB, max {maxRss / 1048576} MB over {samples} samples; backend wait events: {string.Join(", ", waitEvents)}");
        Assert.Equal(rows, count);
        Assert.Equal((long)rows * width, chars);
        Assert.True(samples > 10, $"only {samples} RSS samples");
        Assert.Contains("ClientWrite", waitEvents); // the slow reader held PostgreSQL back instead of the pooler buffering
        Assert.True(maxRss < rssLimit, $"pooler RSS reached {maxRss / 1048576} MB (baseline {baseline / 1048576} MB) while streaming 200 MB");
        Assert.Equal("still fine", await ScalarAsync(c, "select 'still fine'"));
        Assert.Equal(0, await host.StopAsync());
    }
}
