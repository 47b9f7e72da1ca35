namespace Pooler.Actors.Ops;

/// <summary>The /stats page (Ops/stats.html, embedded): static HTML whose script polls /stats.json.</summary>
public static class StatsPage
{
    public static readonly string Html = Load();

    private static string Load()
    {
        using var s = typeof(StatsPage).Assembly.GetManifestResourceStream("Pooler.Actors.stats.html")
                      ?? throw new InvalidOperationException("stats.html is not embedded");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }
}
