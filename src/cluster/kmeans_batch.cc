#include "cluster/kmeans_batch.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "cluster/kmeans_steps.h"
#include "core/parallel.h"
#include "megatax/error.h"

namespace megatax::cluster {

void BatchKMeansDevice::seed(const std::vector<detail::SeedingPlan>&, std::vector<std::vector<std::int64_t>>*) {
  throw_error(ErrorCode::kInternal, "k-means batch: this device does not seed (can_seed() is false)");
}

void BatchKMeansDevice::seeds_as_centroids(const std::vector<std::int64_t>&) {
  throw_error(ErrorCode::kInternal, "k-means batch: this device does not keep seeds (can_keep_seeds() is false)");
}

void BatchKMeansDevice::prepare_from_device(std::span<const MatrixView>, std::span<const void* const>) {
  throw_error(ErrorCode::kInternal, "k-means batch: this device takes no rows on the device (takes_device_rows() is false)");
}

void BatchKMeansDevice::begin_steps(std::span<const KMeansParams>) {
  throw_error(ErrorCode::kInternal, "k-means batch: this device does not step on its own (can_step() is false)");
}

void BatchKMeansDevice::step(const std::vector<std::uint8_t>&, std::vector<double>*, std::vector<std::uint8_t>*,
                             const std::vector<std::int64_t*>&, bool) {
  throw_error(ErrorCode::kInternal, "k-means batch: this device does not step on its own (can_step() is false)");
}

void BatchKMeansDevice::last_distances(std::size_t, float*) {
  throw_error(ErrorCode::kInternal, "k-means batch: this device does not step on its own (can_step() is false)");
}

void BatchKMeansDevice::last_labels(const std::vector<std::int64_t*>&) {
  throw_error(ErrorCode::kInternal, "k-means batch: this device does not step on its own (can_step() is false)");
}

void BatchKMeansDevice::set_centroid_to_point(std::size_t, std::int64_t, std::int64_t) {
  throw_error(ErrorCode::kInternal, "k-means batch: this device cannot set a centroid to a point it holds");
}

std::vector<KMeansResult> fit_kmeans_batch(std::span<const MatrixView> xs,
                                           std::span<const KMeansParams> params,
                                           BatchKMeansDevice& device, int threads,
                                           BatchKMeansTimes* times, std::span<float* const> out,
                                           std::span<const void* const> device_rows, bool centroids_later) {
  const std::size_t P = xs.size();
  if (params.size() != P)
    throw_error(ErrorCode::kInvalidArgument, "k-means batch: " + std::to_string(P) + " problems but " +
                                                 std::to_string(params.size()) + " parameter sets");
  if (!out.empty() && out.size() != P)
    throw_error(ErrorCode::kInvalidArgument, "k-means batch: " + std::to_string(P) + " problems but " +
                                                 std::to_string(out.size()) + " destinations");
  const bool external = !out.empty();
  if (P == 0) return {};
  // The points on the device only: the host never reads a row (the device seeds, keeps its
  // seeds as the centroids and makes the empty-cluster repairs from its own rows).
  const bool rows_on_device = !device_rows.empty();
  if (rows_on_device) {
    std::int64_t n = 0;
    for (const auto& x : xs) n += x.rows;
    if (static_cast<std::int64_t>(device_rows.size()) != n)
      throw_error(ErrorCode::kInvalidArgument, "k-means batch: " + std::to_string(device_rows.size()) +
                                                   " device rows for " + std::to_string(n) + " points");
    if (!external || params[0].spherical || !device.can_seed() || !device.takes_device_rows(xs[0].dtype))
      throw_error(ErrorCode::kInvalidArgument, "k-means batch: points on the device only need caller memory for "
                                               "the centroids, a device that seeds and takes them, and no spherical "
                                               "k-means");
  }
  for (std::size_t p = 0; p < P; ++p) {
    try {
      MatrixView shape = xs[p];
      if (rows_on_device && shape.data == nullptr) shape.data = device_rows.data();  // its data is never read
      detail::validate_problem(shape, params[p]);
    } catch (const Error& e) {
      throw_error(e.code(), "k-means batch, problem " + std::to_string(p) + ": " + e.what());
    }
    if (xs[p].dim != xs[0].dim || params[p].metric != params[0].metric ||
        params[p].spherical != params[0].spherical)
      throw_error(ErrorCode::kInvalidArgument, "k-means batch, problem " + std::to_string(p) +
                                                   ": dim, metric and spherical must match problem 0's");
  }
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  BatchKMeansTimes local;
  BatchKMeansTimes& tm = times != nullptr ? *times : local;
  const auto P64 = static_cast<std::int64_t>(P);
  // Per-problem host steps run on a pool of threads kept for the batch (thousands of steps
  // of a millisecond or so: starting threads per step would cost a good part of each).
  WorkerPool pool(resolve_threads(threads, P64 / 8));
  auto each = [&](const std::function<void(std::size_t)>& f) {
    pool.run(P64, [&](std::int64_t p, int) { f(static_cast<std::size_t>(p)); });
  };

  auto t = Clock::now();
  if (rows_on_device) {
    device.prepare_from_device(xs, device_rows);
  } else {
    device.prepare(xs);
  }
  tm.prepare += since(t);

  // ---- seeding: one distance call per step for every problem still choosing -------------
  t = Clock::now();
  std::vector<std::unique_ptr<detail::SeedingRun>> seeds(P);
  each([&](std::size_t p) {
    seeds[p] = std::make_unique<detail::SeedingRun>(xs[p], params[p].k, params[p].seed,
                                                     params[p].init_sample_per_centroid);
  });
  {
    std::vector<std::span<const std::int64_t>> pools(P);
    for (std::size_t p = 0; p < P; ++p) pools[p] = seeds[p]->pool();
    const auto t_pools = Clock::now();
    device.set_seeding_pools(pools);
    tm.seeding_pools += since(t_pools);
  }
  // The device may run the whole seeding itself (no host step per centroid), and then keep
  // the chosen rows as the centroids (for caller memory: the host's LloydRuns never read
  // their centroids before the device's come back; spherical seeds are normalised on the
  // host, so they take the host copies).
  const bool on_device = device.can_seed();
  const bool seeds_stay = on_device && external && !params[0].spherical && device.can_keep_seeds();
  if (rows_on_device && !seeds_stay)
    throw_error(ErrorCode::kInvalidArgument, "k-means batch: the device cannot keep its seeds of points it holds");
  auto t_chosen = Clock::now();
  if (on_device) {
    std::vector<detail::SeedingPlan> plans(P);
    each([&](std::size_t p) { plans[p] = seeds[p]->plan(); });
    std::vector<std::vector<std::int64_t>> chosen;
    const auto t_device = Clock::now();
    tm.seeding_runs += std::chrono::duration<double>(t_device - t).count();
    device.seed(plans, &chosen);
    t_chosen = Clock::now();
    tm.seeding_device += std::chrono::duration<double>(t_chosen - t_device).count();
    for (const auto& pl : plans) tm.seeding_steps = std::max(tm.seeding_steps, pl.k);
    if (chosen.size() != P)
      throw_error(ErrorCode::kInternal, "k-means batch: the device seeded " + std::to_string(chosen.size()) +
                                            " problems of " + std::to_string(P));
    each([&](std::size_t p) {
      if (static_cast<std::int64_t>(chosen[p].size()) != params[p].k)
        throw_error(ErrorCode::kInternal, "k-means batch, problem " + std::to_string(p) + ": the device chose " +
                                              std::to_string(chosen[p].size()) + " centroids, k = " +
                                              std::to_string(params[p].k));
      if (seeds_stay) return;
      if (external) {
        seeds[p]->set_chosen(chosen[p].data(), out[p]);
      } else {
        seeds[p]->set_chosen(chosen[p].data());
      }
    });
  }
  std::vector<std::vector<std::int64_t>> cands(P);
  std::vector<const float*> dist(P, nullptr);
  std::vector<char> choosing(P, on_device ? 0 : 1);
  // Advances problem p to its next centroid that needs distances (or to its end).
  auto advance = [&](std::size_t p) {
    cands[p].clear();
    while (choosing[p] && cands[p].empty()) choosing[p] = seeds[p]->next(&cands[p]) ? 1 : 0;
  };
  each(advance);
  for (;;) {
    bool any = false;
    for (std::size_t p = 0; p < P; ++p) any = any || !cands[p].empty();
    if (!any) break;
    const auto t_device = Clock::now();
    device.seeding_distances(cands, &dist);
    tm.seeding_device += since(t_device);
    ++tm.seeding_steps;
    each([&](std::size_t p) {
      if (cands[p].empty()) return;
      seeds[p]->take(dist[p]);
      advance(p);
    });
  }
  std::vector<std::unique_ptr<detail::LloydRun>> runs(P);
  each([&](std::size_t p) {
    if (external) {
      if (!on_device)  // stepped on the host: the seeds are the run's own
        std::copy(seeds[p]->centroids().begin(), seeds[p]->centroids().end(), out[p]);
      runs[p] = std::make_unique<detail::LloydRun>(xs[p], params[p], out[p]);
    } else {
      runs[p] = std::make_unique<detail::LloydRun>(xs[p], params[p], std::move(seeds[p]->centroids()));
    }
    seeds[p].reset();
  });
  if (on_device) tm.seeding_chosen += since(t_chosen);
  tm.seeding += since(t);

  // ---- Lloyd: every problem is assigned while any still iterates; the centroids live on
  // the device (the host copies are read back at the end) --------------------------------
  std::vector<std::int64_t> ks(P);
  std::vector<const float*> initial(P);
  for (std::size_t p = 0; p < P; ++p) {
    ks[p] = params[p].k;
    initial[p] = runs[p]->centroid_data();
  }
  const std::int64_t d = xs[0].dim;
  t = Clock::now();
  if (seeds_stay) {
    device.seeds_as_centroids(ks);
  } else {
    device.set_centroids(initial, ks);
  }
  tm.assign += since(t);
  std::vector<std::vector<std::int64_t>> counts(P), moved(P);
  std::vector<char> active(P), updating(P);
  bool reports = false;
  for (const auto& pr : params) reports = reports || static_cast<bool>(pr.on_iteration);
  std::vector<std::int64_t*> labels(P), count_ptr(P);
  std::vector<float*> distances(P);
  // The decisions on the device (no labels or distances to the host each iteration), unless
  // a problem reports its iterations as they go (on_iteration, called here in problem order).
  const bool steps_on_device = device.can_step() && !reports;
  std::vector<std::uint8_t> assigned_now(steps_on_device ? P : 0), updated_now(steps_on_device ? P : 0);
  std::vector<double> inertia_now(steps_on_device ? P : 0);
  if (steps_on_device) {
    t = Clock::now();
    device.begin_steps(params);
    tm.assign += since(t);
  }
  for (;;) {
    bool any = false;
    for (std::size_t p = 0; p < P; ++p) {
      active[p] = runs[p]->wants_assignment() ? 1 : 0;
      any = any || active[p];
      if (steps_on_device) continue;  // (labels come back at the end, distances for a repair)
      labels[p] = active[p] ? runs[p]->labels() : nullptr;
      distances[p] = active[p] ? runs[p]->distances() : nullptr;
    }
    if (!any) break;
    bool update = false;
    if (steps_on_device) {
      for (std::size_t p = 0; p < P; ++p) {
        assigned_now[p] = active[p] ? 1 : 0;
        if (active[p]) counts[p].resize(static_cast<std::size_t>(ks[p]));
        count_ptr[p] = active[p] ? counts[p].data() : nullptr;
      }
      t = Clock::now();
      device.step(assigned_now, &inertia_now, &updated_now, count_ptr, params[0].spherical);
      tm.assign += since(t);
      t = Clock::now();
      // The host's runs take the device's inertia and must come to its decisions.
      for (std::size_t p = 0; p < P; ++p) {
        updating[p] = active[p] && runs[p]->assigned(inertia_now[p]) ? 1 : 0;
        if ((updating[p] != 0) != (active[p] && updated_now[p] != 0))
          throw_error(ErrorCode::kInternal, "k-means batch, problem " + std::to_string(p) + ": the device " +
                                                (updated_now[p] != 0 ? "updated" : "did not update") +
                                                " after inertia " + std::to_string(inertia_now[p]) +
                                                ", the host's run decides otherwise");
        update = update || updating[p];
        if (!updating[p]) count_ptr[p] = nullptr;
        // An empty cluster takes the worst-served points: the repair reads the distances.
        if (updating[p] && std::find(counts[p].begin(), counts[p].end(), 0) != counts[p].end())
          device.last_distances(p, runs[p]->distances());
      }
    } else {
      t = Clock::now();
      device.assign(labels, distances);
      tm.assign += since(t);
      t = Clock::now();
      // Each problem's inertia (its own sum, in its own order) on the pool's threads; in
      // problem order on this one when a problem reports its iterations (on_iteration).
      auto record = [&](std::size_t p) {
        updating[p] = active[p] && runs[p]->assigned() ? 1 : 0;
        counts[p].resize(static_cast<std::size_t>(ks[p]));
      };
      if (reports) {
        for (std::size_t p = 0; p < P; ++p) record(p);
      } else {
        each(record);
      }
      for (std::size_t p = 0; p < P; ++p) {
        update = update || updating[p];
        count_ptr[p] = updating[p] ? counts[p].data() : nullptr;
      }
      if (update) device.update_centroids(count_ptr, params[0].spherical);
    }
    if (update) {
      // The empty-cluster repairs on the pool's threads, their rows to the device after.
      each([&](std::size_t p) {
        moved[p].clear();
        if (count_ptr[p] != nullptr) moved[p] = runs[p]->updated_elsewhere(counts[p].data());
      });
      for (std::size_t p = 0; p < P; ++p) {
        for (std::size_t e = 0; e < moved[p].size(); ++e) {
          const std::int64_t c = moved[p][e];
          if (rows_on_device) {
            device.set_centroid_to_point(p, c, runs[p]->moved_points()[e]);
          } else {
            device.set_centroid(p, c, runs[p]->centroid_data() + c * d);
          }
        }
      }
    }
    tm.update += since(t);
  }
  if (steps_on_device) {  // every problem's last assignment (each was assigned at least once)
    t = Clock::now();
    std::vector<std::int64_t*> all_labels(P);
    for (std::size_t p = 0; p < P; ++p) all_labels[p] = runs[p]->labels();
    device.last_labels(all_labels);
    tm.collect += since(t);
  }
  // The device's centroids overwrite the host copies in place (fresh buffers would cost a
  // page fault per 4 KiB: tens of milliseconds per batch of a wide level).
  t = Clock::now();
  std::vector<float*> out_ptr(P);
  for (std::size_t p = 0; p < P; ++p) out_ptr[p] = runs[p]->centroid_data();
  if (centroids_later && external) {
    device.get_centroids_later(out_ptr);  // in `out` once the caller's centroids_landed() returns
  } else {
    device.get_centroids(out_ptr);
  }
  std::vector<KMeansResult> results(P);
  each([&](std::size_t p) { results[p] = runs[p]->finish(); });
  tm.collect += since(t);
  return results;
}

}  // namespace megatax::cluster
