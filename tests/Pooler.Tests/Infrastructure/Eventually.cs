using System.Diagnostics;

namespace Pooler.Tests.Infrastructure;

/// <summary>
/// Waits on conditions instead of fixed sleeps: polls until the condition holds or the timeout
/// passes, then fails the test with a message (and the last value or exception seen).
/// </summary>
public static class Eventually
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(15);
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromMilliseconds(50);

    /// <summary>Waits until <paramref name="condition"/> returns true. An exception counts as false.</summary>
    public static Task True(Func<bool> condition, string message, TimeSpan? timeout = null, TimeSpan? interval = null)
        => True(() => Task.FromResult(condition()), message, timeout, interval);

    /// <summary>Waits until <paramref name="condition"/> returns true. An exception counts as false.</summary>
    public static async Task True(Func<Task<bool>> condition, string message, TimeSpan? timeout = null, TimeSpan? interval = null)
    {
        await Value(condition, v => v, message, timeout, interval).ConfigureAwait(false);
    }

    /// <summary>
    /// Polls <paramref name="probe"/> until <paramref name="predicate"/> accepts its value and returns that value.
    /// On timeout the failure message includes the last value (or exception) seen.
    /// </summary>
    public static Task<T> Value<T>(Func<T> probe, Func<T, bool> predicate, string message, TimeSpan? timeout = null, TimeSpan? interval = null)
        => Value(() => Task.FromResult(probe()), predicate, message, timeout, interval);

    /// <inheritdoc cref="Value{T}(Func{T}, Func{T, bool}, string, TimeSpan?, TimeSpan?)"/>
    public static async Task<T> Value<T>(Func<Task<T>> probe, Func<T, bool> predicate, string message, TimeSpan? timeout = null, TimeSpan? interval = null)
    {
        var limit = timeout ?? DefaultTimeout;
        var pause = interval ?? DefaultInterval;
        var watch = Stopwatch.StartNew();
        var seen = false;
        T last = default!;
        Exception? lastError = null;
        var attempts = 0;
        while (true)
        {
            attempts++;
            try
            {
                last = await probe().ConfigureAwait(false);
                seen = true;
                lastError = null;
                if (predicate(last))
                    return last;
            }
            catch (Exception e)
            {
                lastError = e;
            }

            if (watch.Elapsed >= limit)
                break;
            var remaining = limit - watch.Elapsed;
            await Task.Delay(remaining < pause ? remaining : pause).ConfigureAwait(false);
        }

        var detail = lastError != null
            ? $"last attempt threw {lastError.GetType().Name}: {lastError.Message}"
            : seen ? $"last value: {Describe(last)}" : "no value seen";
        throw new Xunit.Sdk.XunitException(
            $"Condition not met within {limit.TotalSeconds:0.###} s ({attempts} attempts): {message}; {detail}");
    }

    /// <summary>
    /// Retries <paramref name="assertion"/> until it completes without throwing; on timeout rethrows
    /// (wrapped) the last failure. Handy with xunit asserts.
    /// </summary>
    public static Task Succeeds(Action assertion, string message, TimeSpan? timeout = null, TimeSpan? interval = null)
        => Succeeds(() => { assertion(); return Task.CompletedTask; }, message, timeout, interval);

    /// <inheritdoc cref="Succeeds(Action, string, TimeSpan?, TimeSpan?)"/>
    public static async Task Succeeds(Func<Task> assertion, string message, TimeSpan? timeout = null, TimeSpan? interval = null)
    {
        var limit = timeout ?? DefaultTimeout;
        var pause = interval ?? DefaultInterval;
        var watch = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                await assertion().ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (watch.Elapsed >= limit)
            {
                throw new Xunit.Sdk.XunitException(
                    $"Assertion still failing after {limit.TotalSeconds:0.###} s: {message}; last failure: {e.GetType().Name}: {e.Message}");
            }
            catch (Exception)
            {
                // not yet
            }
            var remaining = limit - watch.Elapsed;
            if (remaining > TimeSpan.Zero)
                await Task.Delay(remaining < pause ? remaining : pause).ConfigureAwait(false);
        }
    }

    private static string Describe<T>(T value) => value switch
    {
        null => "null",
        string s => $"\"{s}\"",
        System.Collections.IEnumerable e and not string => "[" + string.Join(", ", e.Cast<object?>().Select(x => x?.ToString() ?? "null")) + "]",
        _ => value.ToString() ?? "",
    };
}
